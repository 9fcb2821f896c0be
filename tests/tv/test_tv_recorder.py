"""The recorder on real filesystems: hard links, the durable index, a disk that fills up, a
disk that turns read-only (a private tmpfs), and recovery."""

from __future__ import annotations

import errno
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from tv_peers import Tmpfs

from media.tv.dvrindex import INDEX_NAME, DvrIndex
from media.tv.recorder import Recorder
from media.tv.window import Segment

T0 = 1_790_000_000.0
SIZE = 20_000


class Clocks:
    def __init__(self) -> None:
        self.mono = 100.0
        self.wall = T0 + 1000.0


@pytest.fixture
def clocks() -> Clocks:
    return Clocks()


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Tmpfs]:
    fs = Tmpfs(tmp_path / "disk", size_kb=256).mount()
    try:
        yield fs
    finally:
        fs.unmount()


def make_recorder(directory: Path, clocks: Clocks, **kw: float) -> Recorder:
    return Recorder(
        1,
        directory,
        max_age=kw.get("max_age", 3600.0),
        max_bytes=int(kw.get("max_bytes", 10**9)),
        min_free=int(kw.get("min_free", 0)),
        retry_s=kw.get("retry_s", 5.0),
        clock=lambda: clocks.mono,
        wall=lambda: clocks.wall,
    )


class Live:
    """Segment files as the live ingest leaves them."""

    def __init__(self, directory: Path, run: str = "0badcafe") -> None:
        self.directory = directory
        self.run = run
        self.seq = 0
        directory.mkdir(parents=True, exist_ok=True)

    def segment(self, wall: float, size: int = SIZE) -> tuple[Segment, Path]:
        name = f"{self.run}-{self.seq}.ts"
        path = self.directory / name
        path.write_bytes(bytes([self.seq % 256]) * size)
        segment = Segment(self.seq, name, 2.0, wall - 2.0, size)
        self.seq += 1
        return segment, path


async def feed(recorder: Recorder, live: Live, count: int, clocks: Clocks) -> None:
    for _ in range(count):
        recorder.segment_written(*live.segment(clocks.wall))
        await recorder.flush()
        clocks.mono += 2
        clocks.wall += 2


async def test_recording_survives_a_restart_and_cleans_strays(tmp_path: Path, clocks: Clocks) -> None:
    dvr = tmp_path / "dvr"
    live = Live(tmp_path / "live")
    recorder = make_recorder(dvr, clocks)
    await recorder.open()
    await feed(recorder, live, 5, clocks)
    assert [s.seq for s in recorder.window.segments] == [0, 1, 2, 3, 4]
    first = dvr / "0badcafe-0.ts"
    assert first.stat().st_nlink == 2  # a hard link to the live file: not a copy
    assert first.read_bytes() == (live.directory / "0badcafe-0.ts").read_bytes()
    await recorder.close()

    # A crash left a stray file, a torn index line and a segment whose file went missing.
    (dvr / "deadbeef-9.ts").write_bytes(b"x")
    (dvr / "0badcafe-2.ts").unlink()
    index = dvr / INDEX_NAME
    index.write_text(index.read_text() + '{"i":5,"run":"0badca')
    again = make_recorder(dvr, clocks)
    await again.open()
    assert [s.seq for s in again.window.segments] == [0, 1, 3, 4]
    assert not (dvr / "deadbeef-9.ts").exists()
    live.run = "feedf00d"
    live.seq = 0
    await feed(again, live, 2, clocks)
    new = again.window.segments[-2]
    assert new.index == 5 and new.discontinuity  # numbering continues; a new run is a discontinuity
    assert [s.index for s in DvrIndex(dvr).load()] == [0, 1, 3, 4, 5, 6]  # the torn line did not eat a line
    await again.close()


async def test_age_and_cap_on_disk(tmp_path: Path, clocks: Clocks) -> None:
    dvr = tmp_path / "dvr"
    live = Live(tmp_path / "live")
    recorder = make_recorder(dvr, clocks, max_age=30.0, max_bytes=5 * SIZE)
    await recorder.open()
    await feed(recorder, live, 8, clocks)
    files = sorted(p.name for p in dvr.glob("*.ts"))
    assert len(files) == 5 and sum((dvr / n).stat().st_size for n in files) <= 5 * SIZE
    assert recorder.stats.evicted == 3
    clocks.wall += 22
    recorder.tick()
    await recorder.flush()
    assert len(recorder.window.segments) < 5 and recorder.stats.expired > 0
    assert len(list(dvr.glob("*.ts"))) == len(recorder.window.segments)
    await recorder.close()


async def test_a_full_disk_stops_recording_until_space_returns(
    tmp_path: Path, disk: Tmpfs, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="media.tv.recorder")
    live = Live(tmp_path / "live")  # another filesystem: segments are copied
    recorder = make_recorder(disk.path / "dvr", clocks)
    await recorder.open()
    await feed(recorder, live, 2, clocks)
    assert recorder.state.recording and recorder.stats.recorded == 2
    filler = disk.fill(leave=SIZE // 2)
    await feed(recorder, live, 3, clocks)
    status = recorder.status()
    assert status["recording"] is False and status["state"] == "disk_full"
    assert status["reason"] == "the disk is full (0.01 MB free)"
    assert "recording stopped (disk full): the disk is full (0.01 MB free); live TV continues" in caplog.text
    assert not list((disk.path / "dvr").glob("*.part"))  # half copies do not linger
    filler.unlink()
    await feed(recorder, live, 1, clocks)
    assert recorder.state.recording and "recording resumed after 6 s (disk full)" in caplog.text
    assert recorder.window.segments[-1].discontinuity  # three segments are missing before it
    await recorder.close()


async def test_the_reserve_stops_recording_before_the_disk_is_full(tmp_path: Path, disk: Tmpfs, clocks: Clocks) -> None:
    live = Live(tmp_path / "live")
    recorder = make_recorder(disk.path / "dvr", clocks, min_free=disk.free() - 3 * SIZE - 10_000)
    await recorder.open()
    await feed(recorder, live, 6, clocks)
    assert recorder.stats.recorded == 3 and recorder.state.state == "disk_full"
    assert "MB free on the disk, kept in reserve" in recorder.state.reason
    assert recorder.status()["free_bytes"] < recorder.min_free + SIZE
    await recorder.close()


async def test_a_failing_disk_is_retried_after_retry_s(
    tmp_path: Path, disk: Tmpfs, clocks: Clocks, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="media.tv.recorder")
    live = Live(disk.path / "live")  # same filesystem: hard links
    recorder = make_recorder(disk.path / "dvr", clocks, retry_s=5.0)
    await recorder.open()
    await feed(recorder, live, 1, clocks)
    segment, path = live.segment(clocks.wall)
    disk.read_only(True)
    try:
        recorder.segment_written(segment, path)
        await recorder.flush()
        assert recorder.state.state == "disk_error" and recorder.state.reason == "Read-only file system"
        assert recorder.stats.write_errors == 1
        recorder.segment_written(segment, path)  # before retry_s: not even tried
        await recorder.flush()
        assert recorder.stats.write_errors == 1 and recorder.stats.skipped == 2
    finally:
        disk.read_only(False)
    clocks.mono += 5
    await feed(recorder, live, 1, clocks)
    assert recorder.state.recording and recorder.stats.recorded == 2
    assert "recording resumed after 5 s (disk error)" in caplog.text
    # A live segment the ingest could not write stops the recording too, with its reason.
    recorder.segment_lost(errno.ENOSPC, "No space left on device")
    assert recorder.status()["state"] == "disk_full"
    assert recorder.status()["reason"] == "live segment not written: No space left on device"
    await recorder.close()
