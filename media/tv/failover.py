"""Which source a channel pulls, without I/O: fail over on error or stall, and come back.

Driven by the channel's events (``progress`` when output advanced, ``failed`` when a
source reader ended) and by ``tick(now)``; returns actions for the thin layer and the next
deadline. Sources are in priority order. While on a backup, the better sources are probed
every ``retry_primary_s``; a probe that delivers data becomes the active source (the thin
layer keeps the probe's connection, so the source sees no extra reconnect).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class SourceStarted:
    index: int
    reason: str  # "start", "failed", "stalled", "recovered"
    from_probe: bool = False  # promote the probe connection instead of opening a new one


@dataclass(frozen=True)
class SourceStopped:
    index: int


@dataclass(frozen=True)
class ProbeStarted:
    index: int


@dataclass(frozen=True)
class ProbeStopped:
    index: int


SelectorAction = SourceStarted | SourceStopped | ProbeStarted | ProbeStopped


@dataclass
class SourceSelector:
    count: int
    stall_s: float
    start_timeout_s: float
    retry_primary_s: float
    backoff_s: float = 1.0
    max_backoff_s: float = 15.0
    active: int | None = None
    switches: int = 0
    running: bool = False
    _since: float = 0.0
    _progress: float | None = None
    _probe: int | None = None
    _probe_deadline: float = 0.0
    _next_probe: float = 0.0
    _pending: int | None = None  # the source to start once the backoff has passed
    _pending_at: float = 0.0
    _pending_reason: str = ""
    _backoff: float = 0.0
    _failed_at: dict[int, float] = field(default_factory=dict)
    _grace: dict[int, float] = field(default_factory=dict)

    def start(self, now: float) -> list[SelectorAction]:
        self.running = True
        self._backoff = 0.0
        return self._activate(0, now, "start")

    def stop(self) -> list[SelectorAction]:
        actions: list[SelectorAction] = []
        if self._probe is not None:
            actions.append(ProbeStopped(self._probe))
            self._probe = None
        if self.active is not None:
            actions.append(SourceStopped(self.active))
            self.active = None
        self._pending = None
        self.running = False
        return actions

    def set_grace(self, index: int, seconds: float) -> None:
        """Let a source be silent ``seconds`` longer before it counts as stalled (an HLS
        source delivers a segment at a time, so its output comes in bursts)."""
        self._grace[index] = max(0.0, seconds)

    def _stall_after(self, index: int) -> float:
        return self.stall_s + self._grace.get(index, 0.0)

    def progress(self, now: float) -> None:
        """The active source produced output."""
        if self._progress is None:
            self._backoff = 0.0  # it works: forget earlier failures
        self._progress = now

    def failed(self, index: int, now: float) -> list[SelectorAction]:
        """A source reader ended or errored."""
        if index == self._probe:
            self._probe = None
            self._next_probe = now + self.retry_primary_s
            return [ProbeStopped(index)]
        if index == self.active:
            return self._fail_active(now, "failed")
        return []

    def probe_ready(self, index: int, now: float) -> list[SelectorAction]:
        if index != self._probe or not self.running:
            return []
        self._probe = None
        actions: list[SelectorAction] = []
        if self.active is not None:
            actions.append(SourceStopped(self.active))
        self.switches += 1
        actions += self._activate(index, now, "recovered", from_probe=True)
        return actions

    def tick(self, now: float) -> list[SelectorAction]:
        if not self.running:
            return []
        actions: list[SelectorAction] = []
        if self._pending is not None and now >= self._pending_at:
            index, reason = self._pending, self._pending_reason
            self._pending = None
            actions += self._activate(index, now, reason)
        if self.active is not None:
            if self._progress is None:
                if now - self._since >= self.start_timeout_s:
                    actions += self._fail_active(now, "stalled")
            elif now - self._progress >= self._stall_after(self.active):
                actions += self._fail_active(now, "stalled")
        if self._probe is not None and now >= self._probe_deadline:
            actions.append(ProbeStopped(self._probe))
            self._probe = None
            self._next_probe = now + self.retry_primary_s
        if (
            self.active is not None
            and self.active > 0
            and self._progress is not None
            and self._probe is None
            and now >= self._next_probe
        ):
            self._probe = self._best_probe_candidate(now)
            self._probe_deadline = now + self.start_timeout_s
            actions.append(ProbeStarted(self._probe))
        return actions

    def deadline(self) -> float | None:
        if not self.running:
            return None
        times: list[float] = []
        if self._pending is not None:
            times.append(self._pending_at)
        if self.active is not None:
            if self._progress is None:
                times.append(self._since + self.start_timeout_s)
            else:
                times.append(self._progress + self._stall_after(self.active))
            if self.active > 0 and self._progress is not None and self._probe is None:
                times.append(self._next_probe)
        if self._probe is not None:
            times.append(self._probe_deadline)
        return min(times) if times else None

    # -- internals --------------------------------------------------------------------------

    def _activate(self, index: int, now: float, reason: str, from_probe: bool = False) -> list[SelectorAction]:
        self.active = index
        self._since = now
        self._progress = None
        if index > 0:
            self._next_probe = now + self.retry_primary_s
        return [SourceStarted(index, reason, from_probe)]

    def _fail_active(self, now: float, reason: str) -> list[SelectorAction]:
        assert self.active is not None
        failed = self.active
        nxt = (failed + 1) % self.count
        recent = self._failed_at.get(nxt)
        self._failed_at[failed] = now
        actions: list[SelectorAction] = [SourceStopped(failed)]
        if self._probe is not None:
            actions.append(ProbeStopped(self._probe))
            self._probe = None
        self.active = None
        self.switches += 1 if nxt != failed else 0
        # Back off when we come round to a source that failed a moment ago (every source is
        # down, or the only one is): do not hammer the head-end.
        if recent is not None and nxt <= failed and now - recent < self.max_backoff_s:
            self._backoff = min(self.max_backoff_s, max(self.backoff_s, self._backoff * 2))
            self._pending, self._pending_at, self._pending_reason = nxt, now + self._backoff, reason
            return actions
        return actions + self._activate(nxt, now, reason)

    def _best_probe_candidate(self, now: float) -> int:
        assert self.active is not None
        # The better source that failed longest ago (never-failed ones first).
        better = range(self.active)
        return min(better, key=lambda i: (self._failed_at.get(i, float("-inf")), i))
