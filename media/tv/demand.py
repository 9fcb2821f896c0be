"""On-demand channels without I/O: pull a source only while someone watches.

HTTP-TS viewers are open connections; HLS viewers are only requests, so an HLS viewer
counts as present for a while after each request (``presence_s``). A channel with no
viewer runs on for ``idle_timeout_s`` (zapping back and forth must stay fast), unless it
is on the always-on list.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Demand:
    idle_timeout_s: float
    always_on: bool = False
    streams: int = 0  # open HTTP-TS connections
    _last_activity: float | None = None

    def touched(self, now: float) -> None:
        """A viewer asked for something (a playlist, a segment, a stream)."""
        self._last_activity = now

    def stream_opened(self, now: float) -> None:
        self.streams += 1
        self._last_activity = now

    def stream_closed(self, now: float) -> None:
        self.streams = max(0, self.streams - 1)
        self._last_activity = now

    def wanted(self, now: float) -> bool:
        if self.always_on or self.streams:
            return True
        return self._last_activity is not None and now - self._last_activity < self.idle_timeout_s

    def deadline(self) -> float | None:
        """When ``wanted`` may turn false (None: not while things stay as they are)."""
        if self.always_on or self.streams or self._last_activity is None:
            return None
        return self._last_activity + self.idle_timeout_s


@dataclass
class ViewerTracker:
    """Distinct HLS viewers seen in the last ``presence_s`` seconds."""

    presence_s: float
    _seen: dict[str, float] = field(default_factory=dict)

    def seen(self, key: str, now: float) -> None:
        self._seen[key] = now

    def count(self, now: float) -> int:
        stale = [k for k, t in self._seen.items() if now - t >= self.presence_s]
        for k in stale:
            del self._seen[k]
        return len(self._seen)

    def forget(self, predicate_key: str) -> None:
        """Drop every viewer whose key starts with ``predicate_key`` (a revoked token)."""
        for k in [k for k in self._seen if k.startswith(predicate_key)]:
            del self._seen[k]
