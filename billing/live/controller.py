"""Live billing for the gateway's B2BUA: the thin async layer around ``LiveSchedule``.

The B2BUA calls, in order:

- ``authorize(account, destination, category, now_utc)`` at set-up: may the call
  be tried, and for how long at most;
- ``call_answered(record)`` on answer, with a provisional CallRecord (its ``end``
  is ignored): reserves the first slice of credit, counts the call against the
  concurrent-call limits, saves a checkpoint;
- ``call_ended(record)`` with the final CallRecord: rates, stores and charges it
  (never above the credit reserved), releases the reservation.

Meanwhile ``tick()`` (driven by ``run()``'s single timer, or by a test's fake
clock) renews slices, saves checkpoints and puts ``CreditExhausted`` on
``events`` when a call must be ended on both legs. After a crash, ``recover()``
closes this node's open calls at their last checkpoint, charging each once.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from decimal import Decimal

from billing.accounts import Account, normalise_id
from billing.errors import AccountError, BillingError
from billing.live.core import Grant, LiveCall, LiveSchedule, next_grant
from billing.live.spend import LiveSpend, Usage
from billing.rating import Tariff, max_duration
from billing.rating.numbers import normalize_number
from billing.rating.tariff import Category
from billing.records import Rating, RatingContext
from billing.service import BillingService
from billing.store.ledger import ChainView
from billing.timeutil import from_us, to_us
from gateway.cdr import CallRecord
from gateway.cdr_store import record_to_row, row_to_record

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Authorization:
    allowed: bool
    reason: str
    max_duration_s: int  # 0 when refused
    hang_up_at: datetime | None = None  # for answered calls: when credit runs out unless renewed


@dataclass(frozen=True)
class CreditExhausted:
    """The call's credit is spent: end it on both legs now."""

    session_id: str
    leg: str
    account: str
    at: datetime


@dataclass(frozen=True)
class GrantExtended:
    session_id: str
    leg: str
    hang_up_at: datetime
    final: bool


LiveEvent = CreditExhausted | GrantExtended


@dataclass(frozen=True)
class _Room:
    """What an account chain may still reserve, and which account and limit bind it."""

    extra: int | None
    binding: str
    ceilings: dict[str, int | None]


# How many ended calls to remember, so a call_answered that comes after its call_ended
# (they run in separate tasks) is refused instead of tracking a call that is over.
_REMEMBER_ENDED = 4096


def _limited(account: Account) -> bool:
    return account.credit is not None or account.max_spend_per_hour is not None


def _watched(chain: Sequence[Account], rated: bool) -> bool:
    """Whether live spend must hear of a call: to count it, if an account of its chain
    limits concurrent calls; to reserve what it spends, if it is rated and an account has a
    ceiling (credit, hourly spend). Other calls are not counted there at all, as resource
    limits are counted only where a limit exists: a limit set during such a call applies to
    the calls answered after it, not to this one."""
    if any(a.max_concurrent is not None for a in chain):
        return True
    return rated and any(_limited(a) for a in chain)


@dataclass
class _Meta:
    record: CallRecord
    chain: tuple[str, ...]
    tariff: Tariff | None
    number: str
    # How the call is rated when it ends: the account, plan and tariff it was answered under
    # (the grants were reserved at that tariff), so the end needs no read of the accounts.
    context: RatingContext
    # Counted in live spend (see _watched, as of its answer): opened, reserved and closed
    # there; otherwise live spend never hears of it.
    watched: bool


class LiveBilling:
    def __init__(self, service: BillingService, spend: LiveSpend, node: str) -> None:
        self.service = service
        self.spend = spend
        self.node = node
        cfg = service.config
        self.schedule = LiveSchedule(
            renew_before=timedelta(seconds=cfg.renew_before_s),
            checkpoint_every=timedelta(seconds=cfg.checkpoint_interval_s),
            guard=timedelta(milliseconds=cfg.cutoff_guard_ms),
        )
        self.events: asyncio.Queue[LiveEvent] = asyncio.Queue()
        self._meta: dict[str, _Meta] = {}
        self._answering: dict[str, asyncio.Event] = {}  # calls whose call_answered is under way
        self._ended: OrderedDict[str, None] = OrderedDict()  # calls recently ended, oldest first
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # Limits of an account chain.

    async def _view(self, account_id: str, now: datetime, *, balances: bool = True) -> ChainView | None:
        """The chain, plans, balances and last hour's spend of ``account_id``: one read transaction.

        ``balances`` False: the chain and plans only, enough to find the tariff; an unrated
        call needs nothing more, and a cached chain is then served without a read."""
        since = to_us(now - timedelta(hours=1)) if balances else None
        try:
            return await self.service.store.chain_view(normalise_id(account_id), since)
        except AccountError:
            return None

    async def _usage(self, chain: Sequence[Account]) -> dict[str, Usage]:
        if not _watched(chain, rated=True):
            return {}  # nothing to check: spare the (possibly remote) live-spend store a round trip
        return await self.spend.usage([a.id for a in chain])

    @staticmethod
    def _room(view: ChainView, usage: Mapping[str, Usage]) -> _Room:
        """The most that may still be reserved on every account of the chain."""
        ceilings: dict[str, int | None] = {}
        extra: int | None = None
        binding = ""
        for account in view.chain:
            limits: list[tuple[int, str]] = []
            if account.credit is not None:
                limits.append((view.balance[account.id] + account.credit, "no credit"))
            if account.max_spend_per_hour is not None:
                limits.append((account.max_spend_per_hour - view.spent[account.id], "hourly spend limit reached"))
            if not limits:
                ceilings[account.id] = None
                continue
            ceiling, why = min(limits)
            ceilings[account.id] = ceiling
            room = ceiling - usage[account.id].reserved
            if extra is None or room < extra:
                extra, binding = room, f"{why} at {account.id}"
        return _Room(extra, binding, ceilings)

    def _tariff(self, view: ChainView, number: str, category: Category, at: datetime) -> Tariff | str:
        plan = self.service.plan_in(view.chain, view.plans, at)
        tariff = self.service.tariffs.get(plan) if plan else None
        if tariff is None:
            return f"no rate plan for {view.chain[0].id}" if plan is None else f"tariff {plan!r} is not loaded"
        if tariff.find(number, category) is None:
            return f"no {category} rate for {number}"
        return tariff

    # The B2BUA's calls.

    async def authorize(self, account: str, destination: str, category: Category, now_utc: datetime) -> Authorization:
        """May this call be tried? Checks every ancestor's concurrent-call, credit and hourly limits."""
        cfg = self.service.config
        view = await self._view(account, now_utc, balances=False)
        if view is None:
            return Authorization(False, f"unknown account {account}", 0)
        number = normalize_number(destination, cfg.international_prefix)
        tariff = self._tariff(view, number, category, now_utc)
        # What is reserved and open matters to a concurrent-call limit, and to credit only
        # when there is a rate to spend it at: an unrated call skips the (maybe remote) read.
        concurrent = any(a.max_concurrent is not None for a in view.chain)
        usage = await self._usage(view.chain) if concurrent or not isinstance(tariff, str) else {}
        for acc in view.chain:
            if acc.max_concurrent is not None and usage[acc.id].open_calls >= acc.max_concurrent:
                return Authorization(False, f"concurrent call limit reached at {acc.id}", 0)
        if isinstance(tariff, str):
            if cfg.authorize_unrated:
                return Authorization(True, f"unrated: {tariff}", cfg.max_call_duration_s)
            return Authorization(False, tariff, 0)
        view = await self._view(account, now_utc)  # rated: what may be spent matters now
        if view is None:
            return Authorization(False, f"unknown account {account}", 0)
        room = self._room(view, usage)
        if room.extra is None:
            return Authorization(True, "", cfg.max_call_duration_s)
        budget = max(room.extra, 0)
        seconds = max_duration(tariff, number, category, now_utc, Decimal(budget).scaleb(-6), cfg.max_call_duration_s)
        if seconds <= 0:
            return Authorization(False, room.binding, 0)
        return Authorization(True, "", seconds)

    async def call_answered(self, record: CallRecord) -> Authorization:
        """Start live tracking of an answered call; refused (hang up) if its first slice cannot be paid."""
        if record.answer is None:
            raise ValueError("call_answered needs the answer time")
        key = f"{record.session_id}:{record.leg}"
        if key in self._ended:
            # The B2BUA answers and ends calls in separate tasks: a late answer must not
            # start tracking (and reserving for) a call that is over.
            return Authorization(False, "call already ended", 0)
        if key in self._answering:
            return Authorization(False, "call already being answered", 0)
        self._answering[key] = done = asyncio.Event()
        try:
            return await self._answer(key, record)
        finally:
            del self._answering[key]
            done.set()

    async def _answer(self, key: str, record: CallRecord) -> Authorization:
        cfg = self.service.config
        assert record.answer is not None
        view = await self._view(record.account, record.answer, balances=False)
        if view is None:
            return Authorization(False, f"unknown account {record.account}", 0)
        number = normalize_number(record.callee, cfg.international_prefix)
        found = self._tariff(view, number, record.category, record.answer)
        tariff = None if isinstance(found, str) else found
        if tariff is None and not cfg.authorize_unrated:
            return Authorization(False, str(found), 0)
        if tariff is not None:
            view = await self._view(record.account, record.answer)  # the first slice is paid from it
            if view is None:
                return Authorization(False, f"unknown account {record.account}", 0)
        chain = view.chain
        watched = _watched(chain, rated=tariff is not None)
        usage: Mapping[str, Usage] = {}  # nothing to count against when nothing is watched
        if watched:
            limits = {a.id: a.max_concurrent for a in chain}
            opened = await self.spend.open(key, self.node, [a.id for a in chain], limits)
            if opened.refused is not None:
                return Authorization(False, f"concurrent call limit reached at {opened.refused}", 0)
            usage = opened.usage
        context = self.service.context_for(record, (chain, view.plans))
        meta = _Meta(record, tuple(a.id for a in chain), tariff, number, context, watched)
        call = LiveCall(record.session_id, record.leg, record.answer, Grant(0, 0, False), False, record.answer)
        grant, room = await self._extend(call, meta, view, record.answer, usage)
        if grant.seconds == 0:
            if watched:
                await self.spend.close(key)
            return Authorization(False, room.binding or "no credit", 0)
        call.grant = grant
        call.limited = any(_limited(a) for a in chain)  # an account has a ceiling
        call.checkpoint_at = record.answer + self.schedule.checkpoint_every
        # Durable before the call is tracked: if call_ended comes meanwhile it waits for us,
        # and a crash from here on finds the checkpoint and charges the call once, capped at
        # what was reserved. A call live spend does not watch has nothing reserved to cap
        # or release: after a crash the gateway's own checkpoint of it (its call record's)
        # is what charges it, once, so it costs no write of its own here.
        if watched:
            try:
                await self.service.store.put_open_call(
                    record.session_id, record.leg, self.node, json.dumps(record_to_row(record)),
                    json.dumps(meta.chain), grant.reserved if call.limited else -1, to_us(record.answer),
                )  # fmt: skip
            except BaseException:
                await self.spend.close(key)  # not tracked, so nothing would ever release it
                raise
        self._meta[key] = meta
        self.schedule.add(call)
        self._wake.set()
        return Authorization(True, "", grant.seconds, self.schedule.hang_up_at(call))

    async def _extend(
        self, call: LiveCall, meta: _Meta, view: ChainView, now: datetime, usage: Mapping[str, Usage] | None = None
    ) -> tuple[Grant, _Room]:
        """The call's next slice; ``usage`` as read with the view, if it was (else it is read here)."""
        cfg = self.service.config
        if meta.tariff is None:  # unrated: time is granted, nothing reserved, no limit read
            grant = next_grant(
                None, meta.number, meta.record.category, call.answer, call.grant, None, cfg.grant_s,
                cfg.max_call_duration_s,
            )  # fmt: skip
            return grant, _Room(None, "", {})
        key = f"{call.session_id}:{call.leg}"
        for attempt in range(3):  # another gateway may reserve between our read and our write
            if attempt:
                fresh = await self._view(meta.record.account, now)
                if fresh is None:
                    break
                view = fresh
                usage = None
            room = self._room(view, usage if usage is not None else await self._usage(view.chain))
            try:
                grant = next_grant(
                    meta.tariff, meta.number, meta.record.category, call.answer, call.grant, room.extra,
                    cfg.grant_s, cfg.max_call_duration_s,
                )  # fmt: skip
            except BillingError:  # e.g. no rate for the period the call has run into
                return replace(call.grant, final=True), room
            delta = grant.reserved - call.grant.reserved
            if delta <= 0 or not meta.watched or await self.spend.reserve(key, delta, room.ceilings):
                return grant, room
        return replace(call.grant, final=True), room

    async def call_ended(self, record: CallRecord) -> Rating:
        """Rate, store and charge the final record; the charge never exceeds the credit reserved live."""
        key = f"{record.session_id}:{record.leg}"
        self._ended[key] = None
        if len(self._ended) > _REMEMBER_ENDED:
            self._ended.popitem(last=False)
        answering = self._answering.get(key)
        if answering is not None:
            await answering.wait()
        call = self.schedule.remove(key)
        meta = self._meta.pop(key, None)
        cap = call.grant.reserved if call is not None and call.limited else None
        if call is None and self._may_have_checkpoint(record):
            reserved = await self.service.store.open_call_reserved(record.session_id, record.leg)
            cap = None if reserved is None or reserved < 0 else reserved
        # Charge first (with the checkpoint's removal, in one transaction), release after:
        # in between the spend is counted twice, never zero times.
        context = meta.context if meta is not None else None
        close_open = meta is None or meta.watched  # an unwatched call wrote no open-call row
        rating, _new = await self.service.call_ended(record, cap=cap, close_open=close_open, live=True, context=context)
        if meta is not None and meta.watched:  # no meta: never answered here, so never opened
            await self.spend.close(key)
        self._wake.set()
        return rating

    def _may_have_checkpoint(self, record: CallRecord) -> bool:
        """Only an answered call can have been opened, and a cap changes only the rated leg's charge."""
        return record.answer is not None and record.ingress and record.leg == self.service.config.rated_leg

    # Time passing.

    async def tick(self) -> None:
        """Do whatever is due at the service's clock: renew slices, cut off calls, save checkpoints."""
        now = self.service.clock()
        for _round in range(3):
            due = self.schedule.due(now)
            for key in due.renew:
                await self._renew(key, now)
            for key in due.cut_off:
                call = self.schedule.calls[key]
                call.cut_off = True
                self.schedule.reschedule(call)
                account = self._meta[key].record.account
                await self.events.put(CreditExhausted(call.session_id, call.leg, account, now))
            if due.checkpoint:
                points = []
                for key in due.checkpoint:
                    call = self.schedule.calls[key]
                    call.checkpoint_at = now + self.schedule.checkpoint_every
                    self.schedule.reschedule(call)
                    if not self._meta[key].watched:
                        continue  # no open-call row: the gateway's checkpoints cover it
                    reserved = call.grant.reserved if call.limited else -1
                    points.append(
                        (call.session_id, call.leg, reserved, to_us(min(now, self.schedule.hang_up_at(call))))
                    )
                if points:
                    await self.service.store.checkpoint(points)
            if not (due.renew or due.cut_off or due.checkpoint):
                return

    async def _renew(self, key: str, now: datetime) -> None:
        call = self.schedule.calls[key]
        meta = self._meta[key]
        view = await self._view(meta.record.account, now, balances=meta.tariff is not None)
        if view is None:
            call.grant = replace(call.grant, final=True)
        else:
            call.grant, _room = await self._extend(call, meta, view, now)
        self.schedule.reschedule(call)  # a final grant wakes at its hang-up, which may come sooner
        await self.events.put(
            GrantExtended(call.session_id, call.leg, self.schedule.hang_up_at(call), call.grant.final)
        )

    async def run(self) -> None:
        """Wake at the next due time (or when a call starts or ends) and tick. Cancel to stop."""
        while True:
            wake = self.schedule.next_wakeup()
            timeout = None if wake is None else max(0.0, (wake - self.service.clock()).total_seconds())
            self._wake.clear()
            # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel that
            # arrives as the event is set, and stop() would then wait forever.
            try:
                async with asyncio.timeout(timeout):
                    await self._wake.wait()
            except TimeoutError:
                pass
            try:
                await self.tick()
            except Exception:
                # A database or Redis hiccup must not stop live control: log, retry shortly.
                log.exception("billing live tick failed; retrying")
                await asyncio.sleep(1)

    def start(self) -> None:
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self.run(), name="billing-live")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    # After a crash.

    async def recover(self, live: Callable[[], Awaitable[set[str]]] | None = None) -> list[Rating]:
        """Close every call this node had open when it stopped, at its last checkpoint; charge each once.

        ``live``: with several SIP workers, one died: the Session-IDs the others still carry
        (asked for after the open calls were read) are left alone.
        """
        ratings = []
        found = await self.service.store.open_calls(self.node)
        reserved_keys = await self.spend.calls_of(self.node)
        carried = await live() if live is not None else set()
        for sid, leg, rec, _chain, reserved, checkpoint_us in found:
            if sid in carried:
                continue
            record = row_to_record(tuple(json.loads(rec)))
            end = max(from_us(checkpoint_us), record.answer or record.start)
            final = replace(record, end=end, ended_by="system", disposition="answered")
            rating, _new = await self.service.call_ended(final, cap=None if reserved < 0 else reserved, close_open=True)
            ratings.append(rating)
            await self.spend.close(f"{sid}:{leg}")
        for key in reserved_keys:  # reservations left in a shared Redis
            if key.rpartition(":")[0] not in carried:
                await self.spend.close(key)
        return ratings
