"""HLS segmenting decisions on real ffmpeg MPEG-TS output."""

from __future__ import annotations

from pathlib import Path

import pytest

from media.tv.segmenter import (
    DataProduced,
    RandomAccessReached,
    SegmentClosed,
    Segmenter,
    SegmenterEvent,
    SegmentOpened,
)
from media.tv.ts import PACKET_SIZE, ContinuityChecker, TsPacket, packet_pid


def run(seg: Segmenter, data: bytes, chunk: int = 7 * PACKET_SIZE) -> list[SegmenterEvent]:
    events: list[SegmenterEvent] = []
    for i in range(0, len(data), chunk):
        events += seg.feed(data[i : i + chunk], now=i / 1e6)
    return events + seg.close()


def segments(events: list[SegmenterEvent]) -> list[tuple[SegmentOpened, bytes, SegmentClosed]]:
    out = []
    opened: SegmentOpened | None = None
    body = bytearray()
    for e in events:
        if isinstance(e, SegmentOpened):
            opened, body = e, bytearray()
        elif isinstance(e, DataProduced) and opened is not None:
            body += e.data
        elif isinstance(e, SegmentClosed):
            assert opened is not None and opened.seq == e.seq
            out.append((opened, bytes(body), e))
            opened = None
    return out


def pids(data: bytes) -> list[int]:
    return [packet_pid(data, off) for off in range(0, len(data), PACKET_SIZE)]


@pytest.mark.parametrize("chunk", [PACKET_SIZE, 1000, 32768])
def test_cuts_on_every_keyframe_and_passes_bytes_through(ts_media: Path, chunk: int) -> None:
    data = ts_media.read_bytes()
    events = run(Segmenter(target=1.0, maximum=3.0), data, chunk)
    segs = segments(events)
    assert [o.seq for o, _, _ in segs] == [0, 1, 2, 3]
    assert [round(c.duration, 3) for _, _, c in segs[:3]] == [1.0, 1.0, 1.0]
    assert 0.9 < segs[3][2].duration < 1.1
    assert all(o.keyframe and not o.discontinuity for o, _, _ in segs)
    # FFmpeg puts PAT+PMT right before each keyframe: nothing is inserted, nothing lost.
    produced = b"".join(e.data for e in events if isinstance(e, DataProduced))
    assert produced == data
    for _, body, _ in segs:
        assert [p for p in pids(body) if p != 0x11][:2] == [0x0000, 0x1000]
        first_video = next(off for off in range(0, len(body), PACKET_SIZE) if packet_pid(body, off) == 0x100)
        assert TsPacket.parse(body, first_video).random_access


def test_longer_target_marks_random_access_inside_segments(ts_media: Path) -> None:
    events = run(Segmenter(target=2.5, maximum=5.0), ts_media.read_bytes())
    segs = segments(events)
    assert [round(c.duration, 3) for _, _, c in segs][:1] == [3.0]
    inside = [e for e in events if isinstance(e, RandomAccessReached)]
    assert len(inside) == 4 and all(e.psi == b"" for e in inside)


def test_missing_keyframes_cut_at_the_maximum(ts_sparse_keyframes: Path) -> None:
    events = run(Segmenter(target=1.0, maximum=3.0), ts_sparse_keyframes.read_bytes())
    segs = segments(events)
    assert [o.keyframe for o, _, _ in segs] == [True, False, False, False]
    assert all(2.9 < c.duration <= 3.05 for _, _, c in segs[:3])


def test_inserts_tables_when_the_muxer_did_not_and_keeps_counters_continuous(ts_media: Path) -> None:
    data = ts_media.read_bytes()
    # Keep only the first PAT and PMT, as a muxer with a long table interval would.
    kept = bytearray()
    seen: set[int] = set()
    for off in range(0, len(data), PACKET_SIZE):
        pid = packet_pid(data, off)
        if pid in (0x0000, 0x1000):
            if pid in seen:
                continue
            seen.add(pid)
        kept += data[off : off + PACKET_SIZE]
    events = run(Segmenter(target=1.0, maximum=3.0), bytes(kept))
    segs = segments(events)
    assert len(segs) == 4
    for _, body, _ in segs:
        assert [p for p in pids(body) if p != 0x11][:2] == [0x0000, 0x1000]
        assert ContinuityChecker().feed(body) == 0
    whole = b"".join(e.data for e in events if isinstance(e, DataProduced))
    assert ContinuityChecker().feed(whole) == 0


def test_restart_closes_and_marks_the_next_segment(ts_media: Path) -> None:
    data = ts_media.read_bytes()
    seg = Segmenter(target=1.0, maximum=3.0)
    first = seg.feed(data[: len(data) // 2 // PACKET_SIZE * PACKET_SIZE], now=0.0)
    first += seg.restart()
    second = run(seg, data)
    closed = [e for e in first if isinstance(e, SegmentClosed)]
    assert seg.open_seq is None
    opened = [e for e in second if isinstance(e, SegmentOpened)]
    assert opened[0].seq == closed[-1].seq + 1
    assert opened[0].discontinuity and not any(o.discontinuity for o in opened[1:])


def test_startup_segments_are_cut_short(ts_media: Path) -> None:
    events = run(Segmenter(target=2.5, maximum=5.0, startup_segments=2, startup_target=1.0), ts_media.read_bytes())
    assert [round(c.duration, 3) for _, _, c in segments(events)] == [1.0, 1.0, 2.0]
