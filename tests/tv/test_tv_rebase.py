"""Timestamp rebasing: monotonic, continuous output whatever the feed's clock does."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from media.tv.rebase import ORIGIN, Rebaser, StartGate
from media.tv.ts import PTS_WRAP

VIDEO, AUDIO = 0, 1
FRAME = 3600  # 25 fps in 90 kHz ticks
AFRAME = 1920  # AAC 1024 samples at 48 kHz


def run_of(start: int, frames: int, audio_lead: int) -> list[tuple[int, int]]:
    """(stream, dts) of a continuous stretch of feed, interleaved in decode order."""
    packets = [(VIDEO, start + i * FRAME) for i in range(frames)]
    n_audio = frames * FRAME // AFRAME
    packets += [(AUDIO, start + audio_lead + i * AFRAME) for i in range(n_audio)]
    packets.sort(key=lambda p: p[1])
    return [(s, t % PTS_WRAP) for s, t in packets]


def make_rebaser() -> Rebaser:
    r = Rebaser(max_step=90000)
    r.add_stream(VIDEO, is_video=True)
    r.add_stream(AUDIO, is_video=False)
    return r


def feed(r: Rebaser, packets: list[tuple[int, int]]) -> dict[int, list[tuple[int, int]]]:
    out: dict[int, list[tuple[int, int]]] = {VIDEO: [], AUDIO: []}
    for stream, dts in packets:
        got = r.rebase(stream, dts, dts, FRAME if stream == VIDEO else AFRAME)
        if got is not None:
            out[stream].append((dts, got.dts))
    return out


def test_plain_feed_keeps_its_spacing_and_starts_at_origin() -> None:
    r = make_rebaser()
    out = feed(r, run_of(5_000_000, 50, 0))
    video = [o for _, o in out[VIDEO]]
    assert video[0] == ORIGIN
    assert {b - a for a, b in zip(video, video[1:], strict=False)} == {FRAME}
    assert r.jumps == 0


def test_wrap_is_exact() -> None:
    r = make_rebaser()
    out = feed(r, run_of(PTS_WRAP - 20 * FRAME, 50, 0))
    for stream, step in ((VIDEO, FRAME), (AUDIO, AFRAME)):
        times = [o for _, o in out[stream]]
        assert {b - a for a, b in zip(times, times[1:], strict=False)} == {step}
    assert r.wraps == 2 and r.jumps == 0


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.integers(min_value=0, max_value=PTS_WRAP - 1),  # where the feed's clock restarts
            st.integers(min_value=2, max_value=40),  # frames in the stretch
            st.integers(min_value=0, max_value=3 * AFRAME),  # audio starts a little after video
        ),
        min_size=1,
        max_size=6,
    )
)
def test_jumps_give_monotonic_continuous_video_and_keep_lip_sync(
    stretches: list[tuple[int, int, int]],
) -> None:
    r = make_rebaser()
    outputs = []
    previous: list[tuple[int, int]] = []
    for i, (start, frames, lead) in enumerate(stretches):
        packets = run_of(start, frames, lead)
        if i % 2:
            r.new_timeline()  # half the restarts are announced (failover to another source)
        elif i:
            # An unannounced restart is only visible when no stream seems to just carry on.
            for stream in (VIDEO, AUDIO):
                last = max(t for s, t in previous if s == stream)
                first = next(t for s, t in packets if s == stream)
                assume(not 0 < (first - last) % PTS_WRAP <= r.max_step)
        outputs.append(feed(r, packets))
        previous = packets
    video = [o for out in outputs for _, o in out[VIDEO]]
    audio = [o for out in outputs for _, o in out[AUDIO]]
    assert all(b > a for a, b in zip(video, video[1:], strict=False))
    assert all(b > a for a, b in zip(audio, audio[1:], strict=False))
    # Video never leaves a hole: each picture follows the previous one by one frame.
    assert all(b - a == FRAME for a, b in zip(video, video[1:], strict=False))
    # Inside every stretch, audio sits where the feed put it relative to the video.
    for out in outputs:
        if not out[VIDEO] or not out[AUDIO]:
            continue
        v_in, v_out = out[VIDEO][0]
        for a_in, a_out in out[AUDIO]:
            assert (a_out - v_out) == (a_in - v_in) % PTS_WRAP or (a_out - v_out) == (a_in - v_in)


def test_encoder_restart_goes_backwards_and_output_continues() -> None:
    r = make_rebaser()
    first = feed(r, run_of(900_000, 25, 0))
    second = feed(r, run_of(126_000, 25, 0))  # ffmpeg restarted: its clock starts again at 1.4 s
    assert r.jumps >= 1
    assert second[VIDEO][0][1] == first[VIDEO][-1][1] + FRAME


def test_packets_without_timestamps_continue_the_stream() -> None:
    r = make_rebaser()
    a = r.rebase(VIDEO, 1000, 1000, FRAME)
    b = r.rebase(VIDEO, None, None, FRAME)
    c = r.rebase(VIDEO, 1000 + 2 * FRAME, 1000 + 2 * FRAME, FRAME)
    assert a is not None and b is not None and c is not None
    assert (b.dts - a.dts, c.dts - b.dts) == (FRAME, FRAME)


def test_pts_keeps_its_distance_from_dts() -> None:
    r = make_rebaser()
    got = r.rebase(VIDEO, 10_000, 10_000 + 2 * FRAME, FRAME)
    assert got is not None and got.pts - got.dts == 2 * FRAME


def test_start_gate_waits_for_keyframe_and_drops_earlier_audio() -> None:
    gate = StartGate(keyframe_wait=5 * 90000, has_video=True)
    assert not gate.admit(is_video=False, keyframe=True, dts=1000)
    assert not gate.admit(is_video=True, keyframe=False, dts=2000)
    assert gate.admit(is_video=True, keyframe=True, dts=5000)
    assert not gate.admit(is_video=False, keyframe=True, dts=4000)  # before the first picture
    assert gate.admit(is_video=False, keyframe=True, dts=5000)
    assert gate.admit(is_video=True, keyframe=False, dts=8600)


def test_start_gate_gives_up_waiting_for_keyframes() -> None:
    gate = StartGate(keyframe_wait=90000, has_video=True)
    assert not gate.admit(is_video=True, keyframe=False, dts=0)
    assert not gate.admit(is_video=True, keyframe=False, dts=45000)
    assert gate.admit(is_video=True, keyframe=False, dts=90000)


def test_audio_only_needs_no_keyframe() -> None:
    gate = StartGate(keyframe_wait=90000, has_video=False)
    assert gate.admit(is_video=False, keyframe=False, dts=1)
