"""Whether a channel's recording is running, without I/O: disk full, disk failing, back.

Fed the outcome of each segment write and ``now`` (monotonic seconds). A full disk (the
free space fell under the reserve, or a write got ENOSPC) is checked again on every new
segment: looking costs one statvfs, and recording should resume as soon as space returns.
A failing disk (EIO, a read-only remount...) is tried again only every ``retry_s``, so a
dying disk is not hammered twice a second. Transitions come back as events for the log.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

State = Literal["recording", "disk_full", "disk_error"]
FailureKind = Literal["full", "error"]


@dataclass(frozen=True)
class RecordingStopped:
    state: State
    reason: str


@dataclass(frozen=True)
class RecordingResumed:
    stopped_for: float  # seconds
    previous: State


@dataclass
class RecordingState:
    retry_s: float
    state: State = "recording"
    reason: str = ""
    changed_at: float | None = None  # when ``state`` was entered (monotonic)
    retry_at: float | None = None

    @property
    def recording(self) -> bool:
        return self.state == "recording"

    def may_write(self, now: float) -> bool:
        """Whether to try storing the next segment."""
        if self.state != "disk_error":
            return True
        return self.retry_at is None or now >= self.retry_at

    def failed(self, kind: FailureKind, reason: str, now: float) -> RecordingStopped | None:
        new: State = "disk_full" if kind == "full" else "disk_error"
        self.retry_at = now + self.retry_s if new == "disk_error" else None
        self.reason = reason
        if new == self.state:
            return None
        self.state = new
        self.changed_at = now
        return RecordingStopped(new, reason)

    def succeeded(self, now: float) -> RecordingResumed | None:
        if self.state == "recording":
            return None
        previous = self.state
        stopped_for = now - self.changed_at if self.changed_at is not None else 0.0
        self.state = "recording"
        self.reason = ""
        self.changed_at = now
        self.retry_at = None
        return RecordingResumed(stopped_for, previous)

    def deadline(self) -> float | None:
        return self.retry_at
