"""The live-control core: credit granted in slices, deadlines, checkpoints. No I/O.

Time here is wall-clock UTC, not monotonic seconds as in the protocol cores:
prices change with the tariff's local hour, so the grant arithmetic needs real
instants; the asyncio layer turns the returned deadlines into loop timers.

A call's *grant* is the talk time its reserved credit pays for, counted from
the answer: a whole number of billing increments, so a call that stops at its
grant is charged exactly the reservation. The B2BUA is told to hang up
``guard`` before the grant ends, so signalling latency never bills one more
increment. Grants are renewed ``renew_before`` ahead of their end, a slice at a
time, so one call does not hold a balance other calls share.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from billing.rating import Tariff, max_duration, rate_call
from billing.rating.money import MICROS, to_micros
from billing.rating.tariff import Category


@dataclass(frozen=True)
class Grant:
    seconds: int  # paid talk time from the answer
    reserved: int  # micro-units the grant costs (what is held on the accounts)
    final: bool  # no more credit will come: the call ends at this grant


def cost_micros(tariff: Tariff, number: str, category: Category, answer: datetime, seconds: int) -> int:
    return to_micros(rate_call(tariff, number, category, answer, timedelta(seconds=seconds)).cost)


def next_grant(
    tariff: Tariff | None,
    number: str,
    category: Category,
    answer: datetime,
    current: Grant,
    extra: int | None,
    slice_s: int,
    cap_s: int,
) -> Grant:
    """Extend ``current`` by up to ``slice_s`` with at most ``extra`` more micro-units (None: unlimited).

    ``tariff`` None is a call allowed unrated: time is granted, nothing reserved.
    """
    target = min(current.seconds + slice_s, cap_s)
    if tariff is None:
        return Grant(target, 0, target >= cap_s)
    if extra is None:
        seconds = target
    else:
        budget = Decimal(current.reserved + max(extra, 0)) / MICROS
        seconds = max(current.seconds, max_duration(tariff, number, category, answer, budget, target))
    reserved = max(current.reserved, cost_micros(tariff, number, category, answer, seconds)) if seconds else 0
    return Grant(seconds, reserved, seconds < target or seconds >= cap_s)


@dataclass
class LiveCall:
    session_id: str
    leg: str
    answer: datetime
    grant: Grant
    limited: bool  # some account of the chain has a ceiling: the charge is capped at the reservation
    checkpoint_at: datetime
    cut_off: bool = False

    @property
    def key(self) -> str:
        return f"{self.session_id}:{self.leg}"


@dataclass(frozen=True)
class Due:
    renew: tuple[str, ...] = ()
    cut_off: tuple[str, ...] = ()
    checkpoint: tuple[str, ...] = ()


@dataclass
class LiveSchedule:
    """When each open call needs its grant renewed, its state saved, or to be ended.

    Calls wait in a heap by their next wake-up, so a tick costs the calls that are due,
    not every call in progress (a hub holds thousands). A call whose grant, checkpoint
    or cut-off changed is found at its old place and moved on when that comes due; a
    change that can make it due *sooner* must be told with ``reschedule``.
    """

    renew_before: timedelta
    checkpoint_every: timedelta
    guard: timedelta
    calls: dict[str, LiveCall] = field(default_factory=dict)
    _heap: list[tuple[datetime, int, str]] = field(default_factory=list, init=False, repr=False, compare=False)
    _queued: dict[str, datetime] = field(default_factory=dict, init=False, repr=False, compare=False)
    _seq: Iterator[int] = field(default_factory=itertools.count, init=False, repr=False, compare=False)

    def add(self, call: LiveCall) -> None:
        self.calls[call.key] = call
        self.reschedule(call)

    def remove(self, key: str) -> LiveCall | None:
        self._queued.pop(key, None)
        return self.calls.pop(key, None)

    def hang_up_at(self, call: LiveCall) -> datetime:
        """When the B2BUA must end the call if no more credit comes."""
        return call.answer + timedelta(seconds=call.grant.seconds) - self.guard

    def renew_at(self, call: LiveCall) -> datetime | None:
        if call.grant.final:
            return None
        return call.answer + timedelta(seconds=call.grant.seconds) - self.renew_before

    def wake_at(self, call: LiveCall) -> datetime:
        """The first of the call's checkpoint, renewal or (final grant, not yet cut off) hang-up."""
        renew_at = self.renew_at(call)
        if renew_at is not None:
            return min(call.checkpoint_at, renew_at)
        if not call.cut_off:
            return min(call.checkpoint_at, self.hang_up_at(call))
        return call.checkpoint_at

    def reschedule(self, call: LiveCall) -> None:
        """Queue ``call`` at its current wake-up (after anything that changed it)."""
        if self.calls.get(call.key) is not call:
            return
        when = self.wake_at(call)
        if self._queued.get(call.key) == when:
            return
        self._queued[call.key] = when
        heapq.heappush(self._heap, (when, next(self._seq), call.key))
        if len(self._heap) > 2 * len(self._queued) + 64:  # superseded entries: rebuild
            self._heap = [(w, next(self._seq), k) for k, w in self._queued.items()]
            heapq.heapify(self._heap)

    def _settle_top(self) -> None:
        """Drop superseded entries from the top; move a call that now wakes later to its place."""
        heap = self._heap
        while heap:
            when, _, key = heap[0]
            if self._queued.get(key) != when:
                heapq.heappop(heap)
                continue
            call = self.calls.get(key)
            if call is not None and self.wake_at(call) == when:
                return
            heapq.heappop(heap)
            del self._queued[key]
            if call is not None:
                self.reschedule(call)

    def due(self, now: datetime) -> Due:
        self._settle_top()
        keys: list[str] = []
        while self._heap and self._heap[0][0] <= now:
            when, _, key = heapq.heappop(self._heap)
            if self._queued.get(key) == when:
                del self._queued[key]
                keys.append(key)
        renew, cut, checkpoint = [], [], []
        for key in keys:
            call = self.calls.get(key)
            if call is None:
                continue
            renew_at = self.renew_at(call)
            if renew_at is not None and renew_at <= now:
                renew.append(key)
            elif call.grant.final and not call.cut_off and self.hang_up_at(call) <= now:
                cut.append(key)
            if call.checkpoint_at <= now:
                checkpoint.append(key)
            self.reschedule(call)  # still due until the controller acts on it
        return Due(tuple(renew), tuple(cut), tuple(checkpoint))

    def next_wakeup(self) -> datetime | None:
        self._settle_top()
        return self._heap[0][0] if self._heap else None
