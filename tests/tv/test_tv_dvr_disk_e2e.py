"""Disk trouble end to end: the DVR disk fills up, turns read-only, the live disk fills up; each
time recording stops with a clear status (status API, metrics, log), live TV keeps playing, and
recording resumes by itself once the disk is back."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import generate_latest
from tv_gateway import Gateway, StreamReader, channel
from tv_peers import Tmpfs, wait_until

pytestmark = pytest.mark.peers


@pytest.fixture
def disks(tmp_path: Path) -> Iterator[tuple[Tmpfs, Tmpfs]]:
    """A small disk for the gateway's data (live segments) and one for the recordings."""
    live = Tmpfs(tmp_path / "data", size_kb=3072)
    dvr = Tmpfs(tmp_path / "dvr", size_kb=2048)
    try:
        yield live.mount(), dvr.mount()
    finally:
        dvr.unmount()
        live.unmount()


async def test_disk_full_or_failing_stops_recording_and_live_plays_on(
    gateway: Callable[..., Awaitable[Gateway]],
    clock_channel: str,
    disks: tuple[Tmpfs, Tmpfs],
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.INFO, logger="media.tv")
    live_disk, dvr_disk = disks
    gw = await gateway(
        [channel(1, clock_channel, record=True)],
        data_dir=live_disk.path,
        dvr={"dir": str(dvr_disk.path), "min_free_mb": 0.4, "retry_s": 1.0},
    )
    token = gw.token()
    ch = gw.service.channels[1]
    recorder = gw.service.recorders[1]
    viewer = StreamReader(gw, gw.url(token, "ch/1.ts"))  # a set-top box on HTTP-TS all along

    async def status() -> dict[str, Any]:
        async with gw.client.get(f"http://127.0.0.1:{gw.port}/api/tv/status") as r:
            body: dict[str, Any] = (await r.json())["channels"][0]
            return body

    async def live_sequence() -> int:
        async with gw.client.get(gw.url(token, "ch/1/index.m3u8")) as r:
            assert r.status == 200
            return int(re.search(r"#EXT-X-MEDIA-SEQUENCE:(\d+)", await r.text()).group(1))  # type: ignore[union-attr]

    async def live_plays_on(hls: bool = True) -> None:
        mark, segments = len(viewer.data), ch.stats.segments
        await wait_until(lambda: len(viewer.data) > mark + 100_000, 20, "HTTP-TS data")
        if hls:
            before = await live_sequence()
            await wait_until(lambda: ch.stats.segments >= segments + 3, 20, "live HLS segments")
            assert await live_sequence() >= before + 2  # the live playlist keeps sliding
        assert not viewer.ended.is_set()

    recorded_before = 0

    def recording() -> bool:
        return recorder.state.recording and recorder.stats.recorded > recorded_before

    await wait_until(lambda: recorder.stats.recorded >= 3, 30, "recording")
    metrics = generate_latest(gw.registry).decode()
    assert 'seabridge_tv_dvr_recording{channel="1",name="Test 1"} 1.0' in metrics

    # 1. The DVR disk fills up to its reserve: recording stops, live TV does not notice.
    filler = dvr_disk.fill(leave=700_000)
    await wait_until(lambda: recorder.state.state == "disk_full", 30, "the reserve to be reached")
    state = await status()
    print(f"\nDVR disk full: {state['dvr']['reason']}")
    assert state["dvr"]["recording"] is False and state["dvr"]["state"] == "disk_full"
    assert "MB free on the disk, kept in reserve (0.40 MB)" in state["dvr"]["reason"]
    assert 'seabridge_tv_dvr_recording{channel="1",name="Test 1"} 0.0' in generate_latest(gw.registry).decode()
    assert "recording stopped (disk full)" in caplog.text and "live TV continues" in caplog.text
    await live_plays_on()
    assert (await status())["dvr"]["skipped"] > 0

    # ... and resumes when space returns.
    recorded_before = recorder.stats.recorded
    filler.unlink()
    await wait_until(recording, 20, "recording to resume")
    assert "recording resumed after" in caplog.text

    # 2. The DVR disk turns read-only (a failing disk): retried every retry_s, not hammered.
    dvr_disk.read_only(True)
    try:
        await wait_until(lambda: recorder.state.state == "disk_error", 20, "the write error")
        state = await status()
        print(f"DVR disk failing: {state['dvr']['reason']}")
        assert state["dvr"]["reason"] == "Read-only file system" and state["dvr"]["write_errors"] >= 1
        await live_plays_on()
    finally:
        dvr_disk.read_only(False)
    recorded_before = recorder.stats.recorded
    await wait_until(recording, 20, "recording to resume after the disk came back")

    # 3. The live disk itself fills up: no HLS segment can be written, HTTP-TS plays on, the
    # recording says why it stopped.
    errors_before = ch.stats.segment_errors
    filler = live_disk.fill()
    try:
        await wait_until(lambda: ch.stats.segment_errors > errors_before + 1, 20, "live segment write errors")
        await wait_until(lambda: "No space left" in recorder.state.reason, 20, "the recording's reason")
        state = await status()
        print(f"live disk full: {state['last_error']}; DVR: {state['dvr']['reason']}")
        assert state["dvr"]["state"] == "disk_full" and state["segment_errors"] > 0
        assert "cannot write HLS segments (No space left on device); HTTP-TS viewers keep watching" in caplog.text
        await live_plays_on(hls=False)
    finally:
        filler.unlink()
    recorded_before = recorder.stats.recorded
    before = await live_sequence()
    await wait_until(recording, 20, "recording to resume after the live disk emptied")
    assert await live_sequence() > before
    assert "HLS segments are written again" in caplog.text
    await viewer.close()
