"""The live HLS window and its playlist text."""

from __future__ import annotations

from media.tv.hlsparse import MediaPlaylist, parse_playlist
from media.tv.window import LiveWindow, Segment, format_program_date_time


def seg(seq: int, duration: float = 2.0, discontinuity: bool = False) -> Segment:
    return Segment(seq, f"abc-{seq}.ts", duration, 1_790_000_000 + seq * 2.0, 1000, discontinuity)


def test_window_slides_and_keeps_extra_segments_on_disk() -> None:
    w = LiveWindow(size=3, keep_extra=2, max_segment_s=4.0)
    expired = []
    for i in range(8):
        expired += w.add(seg(i))
    assert [s.seq for s in w.listed] == [5, 6, 7]
    assert [s.seq for s in expired] == [0, 1, 2]
    assert w.find("abc-3.ts") is not None  # behind the window, still served
    assert w.find("abc-2.ts") is None
    assert w.media_sequence == 5


def test_playlist_text_parses_back() -> None:
    w = LiveWindow(size=3, keep_extra=0, max_segment_s=4.0)
    for i in range(5):
        w.add(seg(i, duration=1.96 + i / 100))
    text = w.render()
    assert "#EXT-X-TARGETDURATION:4" in text and "#EXT-X-MEDIA-SEQUENCE:2" in text
    assert "#EXT-X-ENDLIST" not in text
    assert f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(1_790_000_004.0)}" in text
    parsed = parse_playlist(text, "http://gw/iptv/t/ch/1/index.m3u8")
    assert isinstance(parsed, MediaPlaylist)
    assert [s.seq for s in parsed.segments] == [2, 3, 4]
    assert parsed.segments[0].uri == "http://gw/iptv/t/ch/1/abc-2.ts"
    assert [s.duration for s in parsed.segments] == [1.98, 1.99, 2.0]


def test_discontinuity_sequence_counts_tags_that_slid_out() -> None:
    w = LiveWindow(size=2, keep_extra=1, max_segment_s=2.0)
    w.add(seg(0))
    w.add(seg(1, discontinuity=True))
    assert w.discontinuity_sequence == 0 and w.render().count("#EXT-X-DISCONTINUITY\n") == 1
    w.add(seg(2))
    w.add(seg(3))
    assert w.discontinuity_sequence == 1 and "#EXT-X-DISCONTINUITY\n" not in w.render()
    assert "#EXT-X-DISCONTINUITY-SEQUENCE:1" in w.render()


def test_program_date_time_format() -> None:
    assert format_program_date_time(0.25) == "1970-01-01T00:00:00.250Z"
