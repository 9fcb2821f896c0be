"""The live HLS window: which finished segments a media playlist lists, and its text.

Segments carry their wall-clock start (UTC), written as EXT-X-PROGRAM-DATE-TIME, so a
recording (time-shift, catch-up) can find them by time later. Segments that slide out of
the window stay on disk for ``keep_extra`` more, for players that fetch a little late;
``add`` returns the ones to delete.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime


@dataclass(frozen=True)
class Segment:
    seq: int
    name: str  # file name, unique for the channel's lifetime (players cache it)
    duration: float
    wall_start: float  # UTC seconds since the epoch
    size: int
    discontinuity: bool = False


def format_program_date_time(wall: float) -> str:
    stamp = datetime.fromtimestamp(wall, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


@dataclass
class LiveWindow:
    size: int  # segments listed
    keep_extra: int  # segments kept behind the listed ones
    max_segment_s: float
    _discontinuities: int = 0
    _segments: deque[Segment] = field(default_factory=deque)

    @property
    def target_duration(self) -> int:
        return max(1, math.ceil(self.max_segment_s))

    @property
    def listed(self) -> list[Segment]:
        return list(self._segments)[-self.size :]

    @property
    def media_sequence(self) -> int:
        listed = self.listed
        return listed[0].seq if listed else 0

    @property
    def discontinuity_sequence(self) -> int:
        """Discontinuity tags that slid out of the listing (RFC 8216 section 4.3.3.3)."""
        return self._discontinuities - sum(1 for s in self.listed if s.discontinuity)

    def add(self, segment: Segment) -> list[Segment]:
        self._segments.append(segment)
        if segment.discontinuity:
            self._discontinuities += 1
        expired: list[Segment] = []
        while len(self._segments) > self.size + self.keep_extra:
            expired.append(self._segments.popleft())
        return expired

    def find(self, name: str) -> Segment | None:
        for segment in self._segments:
            if segment.name == name:
                return segment
        return None

    def clear(self) -> list[Segment]:
        gone = list(self._segments)
        self._segments.clear()
        self._discontinuities = 0
        return gone

    def render(self) -> str:
        listed = self.listed
        lines = [
            "#EXTM3U",
            "#EXT-X-VERSION:3",
            f"#EXT-X-TARGETDURATION:{self.target_duration}",
            f"#EXT-X-MEDIA-SEQUENCE:{self.media_sequence}",
        ]
        if self.discontinuity_sequence:
            lines.append(f"#EXT-X-DISCONTINUITY-SEQUENCE:{self.discontinuity_sequence}")
        for segment in listed:
            if segment.discontinuity:
                lines.append("#EXT-X-DISCONTINUITY")
            lines.append(f"#EXT-X-PROGRAM-DATE-TIME:{format_program_date_time(segment.wall_start)}")
            lines.append(f"#EXTINF:{segment.duration:.3f},")
            lines.append(segment.name)
        return "\n".join(lines) + "\n"
