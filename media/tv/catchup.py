"""Catch-up without I/O: which recorded segments play a programme from its start.

A programme is available when its start lies inside the recording (from the oldest
segment's start to the newest one's end) and has passed. Its playlist runs from the
segment playing at the programme's start (so it begins at most one segment early; an
EXT-X-START offset lets players that honour it begin on the second) to the segment
playing at its end (one that starts within ``BOUNDARY_S`` of the end is left out). A
programme still on air gets an EVENT playlist that grows; a finished one a VOD playlist
with EXT-X-ENDLIST.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from media.tv.dvrplaylist import render_recorded
from media.tv.dvrwindow import Recorded, covering

# A catch-up request longer than this is refused (a typo in a URL, or a scan of the disk).
MAX_PROGRAMME_S = 24 * 3600
# Segment wall clocks are measured, so one segment's end and the next one's start differ by a
# few ms either way (and the index keeps them to the ms). A segment starting this close to a
# programme's end is not part of it, and the programme is final only once the recording runs
# this far past its end: a playlist declared final never gains a segment afterwards.
BOUNDARY_S = 0.05


@dataclass(frozen=True)
class CatchupRange:
    segments: Sequence[Recorded]
    complete: bool  # recorded to the programme's end: the playlist is final
    start_offset: float  # seconds into the first segment where the programme begins


def available(segments: Sequence[Recorded], start: float, now: float) -> bool:
    """Whether a programme starting at ``start`` (UTC seconds) can be watched from its start."""
    if not segments or start > now:
        return False
    return segments[0].wall_start <= start < segments[-1].wall_end


def select(segments: Sequence[Recorded], start: float, stop: float, now: float) -> CatchupRange | None:
    """The recorded segments of the programme [start, stop), or None if it cannot be played."""
    if stop <= start or stop - start > MAX_PROGRAMME_S or not available(segments, start, now):
        return None
    first = covering(segments, start)
    if segments[first].wall_end <= start:
        first += 1  # the start fell in a gap of the recording: begin right after it
    last = covering(segments, stop)
    if last >= 0 and segments[last].wall_start >= stop - BOUNDARY_S:
        last -= 1
    if last < first:
        return None
    chosen = segments[first : last + 1]
    complete = segments[-1].wall_end >= stop + BOUNDARY_S
    return CatchupRange(chosen, complete, max(0.0, start - chosen[0].wall_start))


def render_catchup(rng: CatchupRange, target: int, uri_prefix: str = "") -> str:
    return render_recorded(
        rng.segments,
        target_duration=target,
        kind="vod" if rng.complete else "event",
        start_offset=rng.start_offset,
        uri_prefix=uri_prefix,
    )
