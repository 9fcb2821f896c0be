"""Time for the I/O layers: the cores never read a clock, they are handed ``now``."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Protocol


class Clock(Protocol):
    def monotonic(self) -> float: ...

    def wall(self) -> float: ...


class SystemClock:
    # The C functions themselves, not methods that call them: read about twenty times per call.
    monotonic = staticmethod(time.monotonic)
    wall = staticmethod(time.time)


class WallAnchor:
    """Converts monotonic instants of one call to UTC, fixed at the call's start.

    A wall-clock step (NTP, an operator fixing the date) mid-call must not make a
    call last a negative or an hour-long time; durations come from the monotonic clock.
    """

    def __init__(self, mono: float, wall: float) -> None:
        self._offset = wall - mono

    def utc(self, mono: float) -> datetime:
        return datetime.fromtimestamp(mono + self._offset, UTC)


def utc_now(clock: Clock) -> datetime:
    return datetime.fromtimestamp(clock.wall(), UTC)
