"""Path monitor: probes every path of a link, measures it, and picks where traffic goes.

A path is *up* while probe replies keep arriving: it goes down when none has come
for ``dead_after`` seconds, which bounds failover time whatever the path's round
trip (replies arrive every probe interval, so the last one before a cut is at most
one interval old). The active path is the up path with the best (lowest)
priority, then the lowest smoothed RTT. A better path that comes back is taken
again only after it has stayed up for ``restore_after`` seconds, so a flapping
line does not drag calls back and forth. With no path up, traffic stays where it
was: sending into a dead path costs nothing, stopping would cost the call.

The active path is probed every ``interval``; others every ``idle_interval``
(satellite bytes are costly), and a standby path's ``dead_after`` stretches to
three of its intervals.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class PathSpec:
    name: str
    priority: int


@dataclass(frozen=True)
class MonitorSettings:
    interval: float = 0.2
    idle_interval: float = 1.0
    dead_after: float = 0.6
    restore_after: float = 2.0
    probe_timeout: float = 3.0
    loss_samples: int = 100


@dataclass(frozen=True)
class PathWentDown:
    path: str
    at: float


@dataclass(frozen=True)
class PathCameUp:
    path: str
    at: float


@dataclass(frozen=True)
class ActivePathChanged:
    old: str | None
    new: str
    at: float


PathEvent = PathWentDown | PathCameUp | ActivePathChanged


@dataclass(frozen=True)
class ProbeDue:
    path: str
    probe_id: int


@dataclass(frozen=True)
class PathStats:
    name: str
    priority: int
    up: bool
    active: bool
    rtt: float | None
    srtt: float | None
    jitter: float | None
    loss: float
    probes_sent: int
    replies: int


class _PathState:
    def __init__(self, spec: PathSpec) -> None:
        self.spec = spec
        self.up = False
        self.up_since: float | None = None
        self.last_reply: float | None = None
        # A standby path just made active was probed slowly: give its fast probes time to answer.
        self.grace_until = 0.0
        self.next_probe = 0.0
        self.rtt: float | None = None
        self.srtt: float | None = None
        self.jitter: float | None = None
        self.outstanding: dict[int, float] = {}
        self.outcomes: deque[bool] = deque()
        self.probes_sent = 0
        self.replies = 0


class PathMonitor:
    def __init__(self, paths: Sequence[PathSpec], settings: MonitorSettings, now: float) -> None:
        if not paths:
            raise ValueError("a link needs at least one path")
        self.settings = settings
        self._paths = {p.name: _PathState(p) for p in paths}
        self._next_id = 1
        self.active: str | None = None
        for state in self._paths.values():
            state.next_probe = now

    @property
    def path_names(self) -> list[str]:
        return list(self._paths)

    def _interval(self, state: _PathState) -> float:
        if state.spec.name == self.active or not state.up:
            return self.settings.interval
        return self.settings.idle_interval

    def _dead_at(self, state: _PathState) -> float:
        assert state.last_reply is not None
        return max(state.last_reply + self._dead_after(state), state.grace_until)

    def _dead_after(self, state: _PathState) -> float:
        if state.spec.name == self.active:
            return self.settings.dead_after
        return max(self.settings.dead_after, 3 * self.settings.idle_interval)

    def probes_due(self, now: float) -> list[ProbeDue]:
        due = []
        for state in self._paths.values():
            if now >= state.next_probe:
                probe_id = self._next_id
                self._next_id = (self._next_id + 1) & 0xFFFFFFFF or 1
                state.outstanding[probe_id] = now
                state.probes_sent += 1
                state.next_probe = now + self._interval(state)
                due.append(ProbeDue(state.spec.name, probe_id))
        return due

    def on_reply(self, path: str, probe_id: int, now: float) -> list[PathEvent]:
        state = self._paths.get(path)
        if state is None:
            return []
        sent_at = state.outstanding.pop(probe_id, None)
        if sent_at is None:
            return []  # duplicate, or timed out already
        rtt = now - sent_at
        if state.rtt is not None:
            delta = abs(rtt - state.rtt)
            state.jitter = delta if state.jitter is None else state.jitter + (delta - state.jitter) / 16
        state.rtt = rtt
        state.srtt = rtt if state.srtt is None else state.srtt + (rtt - state.srtt) / 8
        state.last_reply = now
        state.replies += 1
        self._record(state, True)
        events: list[PathEvent] = []
        if not state.up:
            state.up = True
            state.up_since = now
            events.append(PathCameUp(path, now))
        return events + self._choose(now)

    def _record(self, state: _PathState, answered: bool) -> None:
        state.outcomes.append(answered)
        if len(state.outcomes) > self.settings.loss_samples:
            state.outcomes.popleft()

    def poll(self, now: float) -> list[PathEvent]:
        """Declare silent paths down and time out unanswered probes."""
        events: list[PathEvent] = []
        for state in self._paths.values():
            for probe_id, sent_at in list(state.outstanding.items()):
                if now >= sent_at + self.settings.probe_timeout:
                    del state.outstanding[probe_id]
                    self._record(state, False)
            if state.up and state.last_reply is not None and now >= self._dead_at(state):
                state.up = False
                state.up_since = None
                state.next_probe = min(state.next_probe, now + self.settings.interval)
                events.append(PathWentDown(state.spec.name, now))
        return events + self._choose(now)

    def _rank(self, state: _PathState) -> tuple[int, float]:
        return (state.spec.priority, state.srtt if state.srtt is not None else float("inf"))

    def _choose(self, now: float) -> list[PathEvent]:
        candidates = [s for s in self._paths.values() if s.up]
        if not candidates:
            return []
        current = self._paths.get(self.active) if self.active else None
        if current is not None and current.up:
            # Only a strictly better-priority path that has proven itself displaces the active one.
            better = [
                s
                for s in candidates
                if s.spec.priority < current.spec.priority
                and s.up_since is not None
                and now >= s.up_since + self.settings.restore_after
            ]
            if not better:
                return []
            best = min(better, key=self._rank)
        else:
            best = min(candidates, key=self._rank)
        if best.spec.name == self.active:
            return []
        old, self.active = self.active, best.spec.name
        best.next_probe = min(best.next_probe, now + self.settings.interval)
        best.grace_until = now + (best.srtt or 0.0) + self.settings.dead_after
        return [ActivePathChanged(old, best.spec.name, now)]

    def next_deadline(self) -> float:
        deadlines = [s.next_probe for s in self._paths.values()]
        for state in self._paths.values():
            if state.up and state.last_reply is not None:
                deadlines.append(self._dead_at(state))
            if state.outstanding:
                deadlines.append(min(state.outstanding.values()) + self.settings.probe_timeout)
            current = self._paths.get(self.active) if self.active else None
            if (
                state.up
                and state.up_since is not None
                and current is not None
                and state.spec.priority < current.spec.priority
            ):
                deadlines.append(state.up_since + self.settings.restore_after)
        return min(deadlines)

    def send_paths(self, duplicate: bool = False) -> tuple[str, ...]:
        """Where a frame goes now: the active path, plus the next best up path when duplicating."""
        active = self.active or min(self._paths.values(), key=self._rank).spec.name
        if not duplicate:
            return (active,)
        others = [s for s in self._paths.values() if s.up and s.spec.name != active]
        if not others:
            return (active,)
        return (active, min(others, key=self._rank).spec.name)

    def srtt(self) -> float | None:
        """Smoothed RTT of the active path, for retransmission timing."""
        state = self._paths.get(self.active) if self.active else None
        return state.srtt if state is not None else None

    def stats(self) -> list[PathStats]:
        out = []
        for s in self._paths.values():
            loss = s.outcomes.count(False) / len(s.outcomes) if s.outcomes else 0.0
            out.append(
                PathStats(
                    s.spec.name,
                    s.spec.priority,
                    s.up,
                    s.spec.name == self.active,
                    s.rtt,
                    s.srtt,
                    s.jitter,
                    loss,
                    s.probes_sent,
                    s.replies,
                )
            )
        return out
