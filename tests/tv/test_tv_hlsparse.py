"""HLS pull-source playlists: parsing and what to fetch when."""

from __future__ import annotations

import pytest

from media.tv.hlsparse import HlsPuller, MediaPlaylist, PlaylistError, parse_playlist, pick_variant

MASTER = """#EXTM3U
#EXT-X-STREAM-INF:BANDWIDTH=800000,RESOLUTION=640x360,CODECS="avc1.4d401e,mp4a.40.2"
low/index.m3u8
#EXT-X-STREAM-INF:BANDWIDTH=2500000,RESOLUTION=1280x720
hi/index.m3u8
"""


def media(first: int, count: int, target: int = 2, ended: bool = False) -> str:
    lines = [
        "#EXTM3U",
        "#EXT-X-VERSION:3",
        f"#EXT-X-TARGETDURATION:{target}",
        f"#EXT-X-MEDIA-SEQUENCE:{first}",
    ]
    for i in range(first, first + count):
        lines += [f"#EXTINF:{target}.000,", f"seg{i}.ts"]
    if ended:
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"


def test_master_playlist_picks_variant() -> None:
    variants = parse_playlist(MASTER, "http://hq/ch1/master.m3u8")
    assert isinstance(variants, tuple)
    assert pick_variant(variants).uri == "http://hq/ch1/hi/index.m3u8"
    assert pick_variant(variants, max_bandwidth=1_000_000).uri == "http://hq/ch1/low/index.m3u8"
    assert pick_variant(variants, max_bandwidth=10).uri == "http://hq/ch1/low/index.m3u8"


def test_rejects_what_we_cannot_relay() -> None:
    with pytest.raises(PlaylistError):
        parse_playlist("<html>", "http://x/")
    with pytest.raises(PlaylistError):
        parse_playlist(media(0, 1) + '#EXT-X-KEY:METHOD=AES-128,URI="k"\n', "http://x/")
    with pytest.raises(PlaylistError):
        parse_playlist('#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI="i.mp4"\n', "http://x/")


def test_puller_joins_at_live_edge_then_follows() -> None:
    puller = HlsPuller(live_start=2)
    pl = parse_playlist(media(10, 5), "http://hq/a/index.m3u8")
    assert isinstance(pl, MediaPlaylist)
    plan = puller.on_playlist(pl, now=100.0)
    assert [s.seq for s in plan.fetch] == [13, 14] and plan.reload_at == 102.0
    same = puller.on_playlist(pl, now=102.0)
    assert same.fetch == () and same.reload_at == 103.0  # unchanged: reload after half the target
    nxt = parse_playlist(media(11, 5), "http://hq/a/index.m3u8")
    assert isinstance(nxt, MediaPlaylist)
    assert [s.seq for s in puller.on_playlist(nxt, now=103.0).fetch] == [15]


def test_puller_counts_skipped_and_detects_restart() -> None:
    puller = HlsPuller(live_start=1)
    first = parse_playlist(media(10, 3), "http://hq/a/")
    assert isinstance(first, MediaPlaylist)
    puller.on_playlist(first, 0.0)
    far = parse_playlist(media(20, 3), "http://hq/a/")
    assert isinstance(far, MediaPlaylist)
    plan = puller.on_playlist(far, 1.0)
    assert plan.skipped == 7 and [s.seq for s in plan.fetch] == [20, 21, 22]
    restarted = parse_playlist(media(0, 3), "http://hq/a/")
    assert isinstance(restarted, MediaPlaylist)
    plan = puller.on_playlist(restarted, 2.0)
    assert plan.restarted and [s.seq for s in plan.fetch] == [2]
