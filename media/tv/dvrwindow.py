"""The DVR window of one channel, without I/O: which recorded segments are kept.

The recording is the live channel's own segments (cut on keyframes, never re-encoded),
added in order with their wall-clock start (UTC). The window drops the oldest first:
those that ended more than ``max_age`` seconds ago, and as many as it takes to keep the
bytes on disk within ``max_bytes`` before a new one is written.

It numbers the segments itself (``index``: one more per segment, never reused, carried
across restarts by the index file) so time-shifted playlists get a media sequence that
only moves forward, and it marks where players must reset their decoders
(``discontinuity``): a new ingest run, a restarted stream, or segments missing in between
(recording stopped for a while). ``discontinuities`` counts those marks up to and including
a segment, which is what EXT-X-DISCONTINUITY-SEQUENCE needs when older segments slide out.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from media.tv import TvError


class DvrWindowError(TvError):
    """A segment the window cannot take (the caller did not make room first)."""


@dataclass(frozen=True)
class Recorded:
    index: int
    run: str  # the ingest run (live session) that cut it
    seq: int  # its sequence number in that run
    wall_start: float  # UTC seconds since the epoch
    duration: float
    size: int
    discontinuity: bool = False  # does not continue the segment before it
    discontinuities: int = 0  # discontinuity marks up to and including this segment

    @property
    def name(self) -> str:
        return f"{self.run}-{self.seq}.ts"

    @property
    def wall_end(self) -> float:
        return self.wall_start + self.duration

    @property
    def discontinuity_sequence(self) -> int:
        """EXT-X-DISCONTINUITY-SEQUENCE of a playlist that starts with this segment."""
        return self.discontinuities - (1 if self.discontinuity else 0)


@dataclass
class DvrWindow:
    max_age: float  # seconds
    max_bytes: int
    _segments: list[Recorded] = field(default_factory=list)
    _by_name: dict[str, Recorded] = field(default_factory=dict)
    _bytes: int = 0
    _next_index: int = 0
    _discontinuities: int = 0

    @classmethod
    def restore(cls, max_age: float, max_bytes: int, segments: Iterable[Recorded]) -> DvrWindow:
        """A window holding segments read back from disk (in recording order)."""
        window = cls(max_age, max_bytes)
        for segment in segments:
            if window._segments and segment.index <= window._segments[-1].index:
                continue  # a duplicate or out-of-order line: keep the first
            window._keep(segment)
        return window

    # -- reading ------------------------------------------------------------------------------

    @property
    def segments(self) -> Sequence[Recorded]:
        """Oldest first; wall_start never decreases."""
        return self._segments

    @property
    def bytes(self) -> int:
        return self._bytes

    @property
    def start(self) -> float | None:
        return self._segments[0].wall_start if self._segments else None

    @property
    def end(self) -> float | None:
        return self._segments[-1].wall_end if self._segments else None

    @property
    def last(self) -> Recorded | None:
        return self._segments[-1] if self._segments else None

    def find(self, name: str) -> Recorded | None:
        return self._by_name.get(name)

    def fits(self, size: int) -> bool:
        return size <= self.max_bytes

    # -- retention ----------------------------------------------------------------------------

    def make_room(self, size: int) -> list[Recorded]:
        """Drop the oldest segments until ``size`` more bytes fit under the cap."""
        dropped = 0
        while dropped < len(self._segments) and self._bytes + size > self.max_bytes:
            self._bytes -= self._segments[dropped].size
            dropped += 1
        return self._drop(dropped)

    def expire(self, now: float) -> list[Recorded]:
        """Drop the segments that ended more than ``max_age`` before ``now`` (wall clock)."""
        limit = now - self.max_age
        dropped = 0
        while dropped < len(self._segments) and self._segments[dropped].wall_end <= limit:
            self._bytes -= self._segments[dropped].size
            dropped += 1
        return self._drop(dropped)

    def prepare(
        self,
        run: str,
        seq: int,
        wall_start: float,
        duration: float,
        size: int,
        *,
        restarted: bool = False,
    ) -> Recorded:
        """The record a new segment would get (nothing changes until ``append``).
        ``restarted``: the live stream itself marks a discontinuity there."""
        last = self.last
        continues = last is not None and last.run == run and last.seq + 1 == seq and not restarted
        discontinuity = last is not None and not continues
        # A wall clock stepped backwards must not reorder the recording: lookups bisect on it.
        start = wall_start if last is None else max(wall_start, last.wall_start)
        return Recorded(
            index=self._next_index,
            run=run,
            seq=seq,
            wall_start=start,
            duration=duration,
            size=size,
            discontinuity=discontinuity,
            discontinuities=self._discontinuities + (1 if discontinuity else 0),
        )

    def append(self, segment: Recorded) -> None:
        """Keep a prepared segment that is now on disk (call ``make_room`` before writing it)."""
        if segment.index != self._next_index:
            raise DvrWindowError(f"segment {segment.index} was prepared for another state (next is {self._next_index})")
        if self._bytes + segment.size > self.max_bytes:
            raise DvrWindowError(f"{segment.size} more bytes would pass the cap of {self.max_bytes}")
        self._keep(segment)

    # -- internals ----------------------------------------------------------------------------

    def _keep(self, segment: Recorded) -> None:
        self._segments.append(segment)
        self._by_name[segment.name] = segment
        self._bytes += segment.size
        self._next_index = segment.index + 1
        self._discontinuities = segment.discontinuities

    def _drop(self, count: int) -> list[Recorded]:
        if not count:
            return []
        gone = self._segments[:count]
        del self._segments[:count]
        for segment in gone:
            self._by_name.pop(segment.name, None)
        return gone


def covering(segments: Sequence[Recorded], wall: float) -> int:
    """Position of the segment playing at ``wall``: the last one that started at or before
    it (-1 when ``wall`` is before the first)."""
    return bisect_right(segments, wall, key=lambda s: s.wall_start) - 1
