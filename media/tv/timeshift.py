"""Time-shifted channels without I/O: the channel as it was ``shift`` seconds ago.

A shifted channel is a live stream in its own right: at wall-clock ``now`` its playlist
lists what the live playlist listed at ``now - shift`` (the last ``size`` recorded segments
that had ended by then), so it slides one segment at a time, its media sequence only moves
forward, and players treat it exactly like live TV. Over HTTP-TS, ``ShiftCursor`` hands
out the recorded segments in order, each when its slot in the shifted timeline begins.

Also here: the default shift (the site's offset from HQ) and the labels in channel lists.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from zoneinfo import ZoneInfo

from media.tv.dvrplaylist import render_recorded
from media.tv.dvrwindow import Recorded, covering

# A shift must leave this many segments of the window behind its edge (its playlist lists some).
SHIFT_MARGIN_SEGMENTS = 3
# HTTP-TS: when the next segment is not recorded yet (a shift of a few seconds only), look
# again after this long.
_POLL_S = 0.25


def shifted_window(segments: Sequence[Recorded], now: float, shift: float, size: int) -> Sequence[Recorded]:
    """The segments a time-shifted live playlist lists at ``now`` (wall clock)."""
    edge = now - shift
    end = covering(segments, edge) + 1
    # The segment playing at the edge is still being "cut" in the shifted timeline.
    while end > 0 and segments[end - 1].wall_end > edge:
        end -= 1
    return segments[max(0, end - size) : end]


def render_shifted(
    segments: Sequence[Recorded], now: float, shift: float, size: int, target: int, uri_prefix: str = ""
) -> str | None:
    """The shifted live playlist, or None when nothing was recorded that long ago."""
    listed = shifted_window(segments, now, shift, size)
    if not listed:
        return None
    return render_recorded(listed, target_duration=target, kind="live", uri_prefix=uri_prefix)


@dataclass(frozen=True)
class SegmentDue:
    segment: Recorded


@dataclass(frozen=True)
class WaitUntil:
    wall: float  # ask again at this wall-clock time (or when a segment is recorded)


@dataclass(frozen=True)
class NothingRecorded:
    """The shifted timeline points before the oldest recording (or recording never began)."""


ShiftStep = SegmentDue | WaitUntil | NothingRecorded


@dataclass
class ShiftCursor:
    """One HTTP-TS viewer of a shifted channel: which recorded segment to send next.

    It starts with the segment playing at ``now - shift`` (its start is a keyframe with the
    tables, so the player starts at once, at most one segment early) and then sends each
    following segment when its slot begins in the shifted timeline, keeping the player
    about one segment ahead, as the live GOP cache does. Gaps in the recording (recording
    stopped) are skipped once their time has come; a segment that aged out of the window
    while the viewer lagged is skipped too."""

    shift: float
    _last: int | None = None  # index of the last segment sent

    def step(self, segments: Sequence[Recorded], now: float) -> ShiftStep:
        edge = now - self.shift
        if self._last is None:
            pos = covering(segments, edge)
            if pos < 0:
                return NothingRecorded()
            if segments[pos].wall_end > edge:
                return self._send(segments[pos])
            # The shifted timeline is in a gap of the recording: start with what follows.
            self._last = segments[pos].index
        pos = _after(segments, self._last)
        if pos >= len(segments):
            return WaitUntil(now + _POLL_S)
        nxt = segments[pos]
        if nxt.wall_start <= edge:
            return self._send(nxt)
        return WaitUntil(nxt.wall_start + self.shift)

    def _send(self, segment: Recorded) -> SegmentDue:
        self._last = segment.index
        return SegmentDue(segment)


def _after(segments: Sequence[Recorded], index: int) -> int:
    """Position of the first segment whose index is above ``index``."""
    lo, hi = 0, len(segments)
    while lo < hi:
        mid = (lo + hi) // 2
        if segments[mid].index <= index:
            lo = mid + 1
        else:
            hi = mid
    return lo


# -- which shifts, and their names ---------------------------------------------------------------


def zone_offset(zone: str, at: float) -> int:
    """Seconds east of UTC of IANA ``zone`` at ``at`` (UTC seconds); "" is this machine's
    own zone (the one place here that looks outside its arguments)."""
    if not zone:
        return time.localtime(at).tm_gmtoff
    offset = datetime.fromtimestamp(at, ZoneInfo(zone)).utcoffset()
    return int(offset.total_seconds()) if offset is not None else 0


def default_shift(hq_offset_s: int, site_offset_s: int) -> int | None:
    """The shift that puts HQ's evening at the site's evening: HQ's UTC offset minus the
    site's (Beijing +8, Kinshasa +1: 7 hours). None when the site is not behind HQ."""
    shift = hq_offset_s - site_offset_s
    return shift if shift > 0 else None


def channel_shifts(
    configured_hours: Sequence[float] | None, hq_offset_s: int, site_offset_s: int, window_s: float, margin_s: float
) -> list[int]:
    """The time-shifted entries (seconds behind live) of a recorded channel for one tenant:
    the configured ones, or else the tenant's offset from the site; only those the channel's
    window can play."""
    if configured_hours is None:
        shift = default_shift(hq_offset_s, site_offset_s)
        shifts = [shift] if shift is not None else []
    else:
        shifts = [round(h * 3600) for h in configured_hours]
    return usable_shifts(shifts, window_s, margin_s)


def usable_shifts(shifts: Sequence[int], window_s: float, margin_s: float) -> list[int]:
    """The shifts a channel's DVR window can play (with ``margin_s`` to spare), sorted."""
    return sorted({s for s in shifts if 0 < s <= window_s - margin_s})


def shift_label(seconds: int) -> str:
    """ "+7h", "+6h30m", "+45s": how a shift reads in a channel name ("CCTV-1 (+7h)")."""
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    parts = [f"{hours}h" if hours else "", f"{minutes}m" if minutes else "", f"{secs}s" if secs else ""]
    return "+" + ("".join(parts) or "0s")
