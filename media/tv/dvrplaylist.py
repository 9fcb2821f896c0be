"""HLS media playlists over recorded segments (time-shift and catch-up), without I/O.

Segment URIs are the bare file names: every recorded playlist is served from the same
path as the segments (``/iptv/<token>/ch/<n>/dvr/``), so they resolve there and carry the
token with them.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from media.tv.dvrwindow import Recorded
from media.tv.window import format_program_date_time

PlaylistType = Literal["live", "event", "vod"]


def render_recorded(
    segments: Sequence[Recorded],
    *,
    target_duration: int,
    kind: PlaylistType,
    start_offset: float | None = None,
    uri_prefix: str = "",
) -> str:
    """``live``: a sliding window (no type tag, no end); ``event``: grows, never slides
    (a programme still on air); ``vod``: complete, ends with EXT-X-ENDLIST.

    ``start_offset``: where in the playlist playback should begin (EXT-X-START), e.g. a
    programme's start inside its first segment. Players that ignore it begin at the
    segment's start, at most one segment early. ``uri_prefix`` goes before each segment
    name, for a playlist served from another path than the segments."""
    first = segments[0] if segments else None
    lines = ["#EXTM3U", "#EXT-X-VERSION:3", f"#EXT-X-TARGETDURATION:{target_duration}"]
    lines.append(f"#EXT-X-MEDIA-SEQUENCE:{first.index if first else 0}")
    if kind == "live" and first is not None and first.discontinuity_sequence:
        lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{first.discontinuity_sequence}")
    if kind == "vod":
        lines.append("#EXT-X-PLAYLIST-TYPE:VOD")
    elif kind == "event":
        lines.append("#EXT-X-PLAYLIST-TYPE:EVENT")
    if start_offset is not None and start_offset > 0:
        lines.append(f"#EXT-X-START:TIME-OFFSET={start_offset:.3f},PRECISE=YES")
    for i, segment in enumerate(segments):
        # A recording that starts mid-way (VOD, event) begins fresh: no mark on its first.
        if segment.discontinuity and (i > 0 or kind == "live"):
            lines.append("#EXT-X-DISCONTINUITY")
        lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(segment.wall_start)}")
        lines.append(f"#EXTINF:{segment.duration:.3f},")
        lines.append(uri_prefix + segment.name)
    if kind == "vod":
        lines.append("#EXT-X-ENDLIST")
    return "\n".join(lines) + "\n"
