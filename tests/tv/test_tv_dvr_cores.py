"""The DVR cores with fake clocks: retention, time-shifted playlists, catch-up, recording state."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from media.tv.catchup import BOUNDARY_S, available, render_catchup, select
from media.tv.dvrwindow import DvrWindow, DvrWindowError, Recorded
from media.tv.hlsparse import MediaPlaylist, parse_playlist
from media.tv.recstate import RecordingResumed, RecordingState, RecordingStopped
from media.tv.timeshift import (
    NothingRecorded,
    SegmentDue,
    ShiftCursor,
    WaitUntil,
    default_shift,
    render_shifted,
    shift_label,
    shifted_window,
    usable_shifts,
    zone_offset,
)

T0 = 1_790_000_000.0  # a wall-clock origin (UTC seconds)


def record(window: DvrWindow, run: str, seq: int, start: float, duration: float = 2.0, size: int = 100) -> Recorded:
    window.make_room(size)
    segment = window.prepare(run, seq, start, duration, size)
    window.append(segment)
    return segment


def filled(count: int, duration: float = 2.0, size: int = 100, run: str = "aaaaaaaa") -> DvrWindow:
    window = DvrWindow(max_age=1e9, max_bytes=10**12)
    for i in range(count):
        record(window, run, i, T0 + i * duration, duration, size)
    return window


# -- retention ----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    cap=st.integers(1000, 20_000),
    sizes=st.lists(st.integers(1, 1000), min_size=1, max_size=200),
    durations=st.lists(st.floats(0.5, 4.0), min_size=1, max_size=200),
)
def test_the_window_never_exceeds_its_cap_and_drops_oldest_first(
    cap: int, sizes: list[int], durations: list[float]
) -> None:
    window = DvrWindow(max_age=1e9, max_bytes=cap)
    on_disk: dict[str, int] = {}
    wall = T0
    for i, size in enumerate(sizes):
        duration = durations[i % len(durations)]
        for gone in window.make_room(size):
            del on_disk[gone.name]
        segment = window.prepare("run00000", i, wall, duration, size)
        on_disk[segment.name] = size  # written only after room was made
        assert sum(on_disk.values()) <= cap
        window.append(segment)
        wall += duration
        assert window.bytes == sum(on_disk.values()) <= cap
        indexes = [s.index for s in window.segments]
        assert indexes == list(range(indexes[0], indexes[0] + len(indexes)))  # oldest went first
        assert window.last is not None and window.last.index == i


def test_age_expiry_and_cap_together() -> None:
    window = DvrWindow(max_age=10.0, max_bytes=450)
    for i in range(8):
        record(window, "r", i, T0 + 2 * i)
    assert [s.seq for s in window.segments] == [4, 5, 6, 7]  # 450 bytes hold four of 100
    gone = window.expire(T0 + 19)  # segment 4 ends at T0 + 10: not ten seconds ago yet
    assert [s.seq for s in gone] == []
    gone = window.expire(T0 + 12 + 10)
    assert [s.seq for s in gone] == [4, 5]
    assert window.start == T0 + 12 and window.end == T0 + 16
    assert window.find("r-6.ts") is not None and window.find("r-5.ts") is None


def test_append_refuses_what_make_room_did_not_allow() -> None:
    window = DvrWindow(max_age=100, max_bytes=150)
    record(window, "r", 0, T0)
    segment = window.prepare("r", 1, T0 + 2, 2.0, 100)
    with pytest.raises(DvrWindowError):
        window.append(segment)
    assert not window.fits(151)


def test_discontinuities_new_run_gap_and_restart() -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**9)
    a0 = record(window, "aaaa", 0, T0)
    a1 = record(window, "aaaa", 1, T0 + 2)
    a3 = record(window, "aaaa", 3, T0 + 6)  # segment 2 was not recorded (disk full)
    b0 = record(window, "bbbb", 0, T0 + 100)  # the gateway restarted
    window.make_room(0)
    b1 = window.prepare("bbbb", 1, T0 + 102, 2.0, 100, restarted=True)  # the stream layout changed
    window.append(b1)
    assert [s.discontinuity for s in (a0, a1, a3, b0, b1)] == [False, False, True, True, True]
    assert [s.discontinuities for s in (a0, a1, a3, b0, b1)] == [0, 0, 1, 2, 3]
    assert [s.discontinuity_sequence for s in (a0, a1, a3, b0, b1)] == [0, 0, 0, 1, 2]
    assert [s.index for s in window.segments] == [0, 1, 2, 3, 4]


def test_a_wall_clock_stepping_back_keeps_the_order() -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**9)
    record(window, "r", 0, T0)
    late = record(window, "r", 1, T0 - 30)
    assert late.wall_start == T0


def test_restore_continues_numbering_and_skips_duplicates() -> None:
    old = filled(5)
    restored = DvrWindow.restore(1e9, 10**9, [*old.segments, old.segments[2]])
    assert [s.index for s in restored.segments] == [0, 1, 2, 3, 4]
    nxt = record(restored, "newrun00", 0, T0 + 20)
    assert nxt.index == 5 and nxt.discontinuity
    assert restored.find("aaaaaaaa-3.ts") == old.segments[3]


# -- time-shift ---------------------------------------------------------------------------------


def test_shifted_window_lists_what_live_listed_back_then() -> None:
    window = filled(30)  # segments of 2 s from T0 to T0 + 60
    now = T0 + 60
    listed = shifted_window(window.segments, now, 20.0, 6)
    # 20 s ago the edge was T0 + 40: segments ending by then, the last six of them.
    assert [s.seq for s in listed] == [14, 15, 16, 17, 18, 19]
    assert all(s.wall_end <= now - 20 for s in listed)
    assert shifted_window(window.segments, now, 61.0, 6) == []  # before the recording began
    assert render_shifted(window.segments, now, 61.0, 6, 2) is None


@settings(max_examples=100, deadline=None)
@given(
    durations=st.lists(st.floats(0.8, 4.0), min_size=10, max_size=80),
    shift=st.floats(1.0, 60.0),
    step=st.floats(0.1, 3.0),
)
def test_a_shifted_playlist_slides_like_a_live_one(durations: list[float], shift: float, step: float) -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**12)
    wall = T0
    for i, d in enumerate(durations):
        gap = i >= len(durations) // 2  # recording stopped for five seconds: a segment is missing
        if i == len(durations) // 2:
            wall += 5.0
        record(window, "aaaaaaaa", i + gap, wall, d)
        wall += d
    now, last_first, seen_tags = T0, -1, {}
    while now < wall + shift + 5:
        text = render_shifted(window.segments, now, shift, 6, 4)
        if text is not None:
            parsed = parse_playlist(text, "http://gw/iptv/t/ch/1/dvr/shift-1.m3u8")
            assert isinstance(parsed, MediaPlaylist) and not parsed.ended
            assert parsed.media_sequence >= last_first  # only ever moves forward
            last_first = parsed.media_sequence
            assert all(s.duration <= 4 for s in parsed.segments)
            for s in parsed.segments:  # a segment's discontinuity never changes between reloads
                assert seen_tags.setdefault(s.seq, s.discontinuity) == s.discontinuity
            listed = shifted_window(window.segments, now, shift, 6)
            assert listed[-1].wall_end <= now - shift
            assert "#EXT-X-PLAYLIST-TYPE" not in text
            if listed[0].discontinuity_sequence:
                assert f"#EXT-X-DISCONTINUITY-SEQUENCE:{listed[0].discontinuity_sequence}" in text
        now += step


def test_http_ts_cursor_sends_each_segment_when_its_slot_begins() -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**9)
    for i in range(10):
        record(window, "aaaaaaaa", i, T0 + 2 * i)
    for i in range(12, 15):  # recording stopped for 4 s
        record(window, "aaaaaaaa", i, T0 + 2 * i)
    cursor = ShiftCursor(shift=10.0)
    now = T0 + 15.0  # shifted edge T0 + 5: inside segment 2
    sent: list[tuple[int, float]] = []
    for _ in range(200):
        step = cursor.step(window.segments, now)
        if isinstance(step, SegmentDue):
            sent.append((step.segment.seq, now))
        else:
            assert isinstance(step, WaitUntil) and step.wall > now
            now = step.wall
        if now > T0 + 50:
            break
    assert [seq for seq, _ in sent] == [2, 3, 4, 5, 6, 7, 8, 9, 12, 13, 14]
    assert sent[0][1] == T0 + 15.0  # the first at once, the player starts on its keyframe
    for seq, at in sent[1:]:
        assert at == pytest.approx(T0 + 2 * seq + 10.0)  # each when its slot begins, N s late
    assert isinstance(ShiftCursor(shift=100.0).step(window.segments, T0 + 50), NothingRecorded)


def test_http_ts_cursor_in_a_gap_waits_for_the_next_segment() -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**9)
    record(window, "r", 0, T0)
    record(window, "r", 5, T0 + 10)
    cursor = ShiftCursor(shift=5.0)
    step = cursor.step(window.segments, T0 + 11)  # edge T0 + 6: nothing was recorded then
    assert step == WaitUntil(T0 + 15)
    assert isinstance(cursor.step(window.segments, T0 + 15), SegmentDue)


def test_shifts_and_labels() -> None:
    at = datetime(2026, 11, 26, 12, tzinfo=UTC).timestamp()
    assert zone_offset("Asia/Shanghai", at) == 8 * 3600
    beijing_kinshasa = default_shift(zone_offset("Asia/Shanghai", at), zone_offset("Africa/Kinshasa", at))
    assert beijing_kinshasa == 7 * 3600
    assert default_shift(zone_offset("Asia/Shanghai", at), zone_offset("Africa/Lubumbashi", at)) == 6 * 3600
    assert default_shift(zone_offset("Asia/Shanghai", at), zone_offset("Asia/Tokyo", at)) is None
    assert shift_label(7 * 3600) == "+7h" and shift_label(6 * 3600 + 1800) == "+6h30m"
    assert shift_label(20) == "+20s" and shift_label(90) == "+1m30s"
    assert usable_shifts([25200, 3600, 3600, 40000, 0], window_s=28800, margin_s=12) == [3600, 25200]


# -- catch-up -----------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(
    durations=st.lists(st.floats(0.5, 4.0), min_size=5, max_size=60),
    start_at=st.floats(0.0, 1.0),
    length=st.floats(1.0, 100.0),
)
def test_catchup_starts_within_one_segment_of_the_programme(
    durations: list[float], start_at: float, length: float
) -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**12)
    wall = T0
    for i, d in enumerate(durations):
        record(window, "aaaaaaaa", i, wall, d)
        wall += d
    start = T0 + start_at * (wall - T0 - 0.01)
    stop = start + length
    now = wall + 1
    rng = select(window.segments, start, stop, now)
    assert rng is not None
    first = rng.segments[0]
    assert first.wall_start <= start < first.wall_end  # the segment playing at the start
    assert rng.start_offset == pytest.approx(start - first.wall_start)
    # Runs to the programme's end (a segment starting within BOUNDARY_S of it adds nothing).
    assert rng.segments[-1].wall_end >= min(stop - BOUNDARY_S, wall) - 1e-6
    assert rng.complete == (stop + BOUNDARY_S <= wall)
    text = render_catchup(rng, 4)
    parsed = parse_playlist(text, "http://gw/x/dvr/1-2.m3u8")
    assert isinstance(parsed, MediaPlaylist)
    assert parsed.ended == rng.complete
    assert ("#EXT-X-PLAYLIST-TYPE:VOD" in text) == rng.complete
    assert ("#EXT-X-PLAYLIST-TYPE:EVENT" in text) == (not rng.complete)


def test_catchup_availability() -> None:
    window = filled(30)  # T0 .. T0 + 60
    segments = window.segments
    assert available(segments, T0 + 10, now=T0 + 61)
    assert not available(segments, T0 - 1, now=T0 + 61)  # began before the recording
    assert not available(segments, T0 + 61, now=T0 + 61.5)  # not recorded yet
    assert not available(segments, T0 + 70, now=T0 + 65)  # in the future
    assert select(segments, T0 + 10, T0 + 5, T0 + 61) is None  # stop before start
    assert select(segments, T0 + 10, T0 + 10 + 90000, T0 + 61) is None  # absurdly long


def test_a_final_catchup_playlist_never_gains_a_segment() -> None:
    """Measured clocks: a segment may end a little after the programme and the next one start
    a little before its end. The playlist is final only once that can no longer change it."""
    window = DvrWindow(max_age=1e9, max_bytes=10**9)
    record(window, "r", 0, T0, 2.0005)  # ends 0.5 ms after the programme
    before = select(window.segments, T0 + 1, T0 + 2, T0 + 2.01)
    assert before is not None and not before.complete  # an EVENT playlist, still open
    record(window, "r", 1, T0 + 1.9998)  # the next segment starts 0.2 ms before the end
    after = select(window.segments, T0 + 1, T0 + 2, T0 + 4)
    assert after is not None and after.complete and [s.seq for s in after.segments] == [0]
    record(window, "r", 2, T0 + 4)
    assert select(window.segments, T0 + 1, T0 + 2, T0 + 6) == after


def test_catchup_starting_in_a_gap_begins_after_it() -> None:
    window = DvrWindow(max_age=1e9, max_bytes=10**9)
    record(window, "r", 0, T0)
    record(window, "r", 5, T0 + 10)
    record(window, "r", 6, T0 + 12)
    rng = select(window.segments, T0 + 5, T0 + 13, T0 + 20)
    assert rng is not None and [s.seq for s in rng.segments] == [5, 6] and rng.start_offset == 0
    text = render_catchup(rng, 2)
    assert "#EXT-X-DISCONTINUITY\n" not in text.split("#EXTINF")[0]  # a VOD starts clean


# -- recording state ----------------------------------------------------------------------------


def test_disk_full_is_rechecked_every_segment_a_failing_disk_after_retry() -> None:
    state = RecordingState(retry_s=30.0)
    assert state.recording and state.may_write(0.0)
    assert state.failed("full", "1 MB free", 10.0) == RecordingStopped("disk_full", "1 MB free")
    assert state.failed("full", "0.5 MB free", 12.0) is None  # no new event, new reason
    assert state.reason == "0.5 MB free" and state.may_write(12.1)
    assert state.succeeded(20.0) == RecordingResumed(10.0, "disk_full")
    assert state.succeeded(21.0) is None
    assert state.failed("error", "Input/output error", 30.0) == RecordingStopped("disk_error", "Input/output error")
    assert not state.may_write(59.9) and state.deadline() == 60.0
    assert state.may_write(60.0)
    assert state.failed("error", "Input/output error", 60.0) is None and not state.may_write(89.0)
    event = state.succeeded(90.5)
    assert event == RecordingResumed(60.5, "disk_error") and state.state == "recording"
