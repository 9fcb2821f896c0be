"""The billing store: accounts, rate plans, calls, rating runs and the ledger, in one SQL code path.

Idempotency lives in primary keys, not in checks: a call is keyed by
(session_id, leg), a rating run by (session_id, leg, run), a ledger entry by a
deterministic id ("call:<session>:<leg>:<run>:charge", "topup:<reference>"),
and every insert is ``ON CONFLICT DO NOTHING``. A record sent twice, or
replicated twice, finds its key taken and changes nothing.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from billing.accounts import Account
from billing.errors import LedgerError
from billing.records import (
    CALL_COLUMNS,
    RATING_COLUMNS,
    Rating,
    call_row,
    rating_from_row,
    rating_row,
    record_from_row,
)
from billing.store.sql import Database, Row, Tx
from gateway.cdr import CallRecord

_ACCOUNT_COLUMNS = "id, level, tenant, site, payment, credit_limit, max_concurrent, max_spend_per_hour"
_CALLS = ", ".join(CALL_COLUMNS)
_RATINGS = ", ".join(RATING_COLUMNS)
_RATINGS_R = ", ".join(f"r.{c}" for c in RATING_COLUMNS)
_CALLS_C = ", ".join(f"c.{c}" for c in CALL_COLUMNS)


def _q(n: int) -> str:
    return ",".join("?" * n)


@dataclass(frozen=True)
class LedgerEntry:
    entry: str
    account: str
    tenant: str
    site: str
    kind: str  # charge | refund | topup | adjustment
    amount: int  # micro-units; money out of the account is negative
    session_id: str | None
    leg: str | None
    run: int | None
    at_us: int
    note: str
    created_us: int


def call_entries(record: CallRecord, rating: Rating, previous: Rating | None, end_us: int) -> list[LedgerEntry]:
    """The ledger rows a rating run adds: refund the previous run's charge, take this run's."""
    out = []
    key = f"call:{record.session_id}:{record.leg}"
    if previous is not None and previous.charged:
        out.append(
            LedgerEntry(
                f"{key}:{previous.run}:refund", previous.account, previous.tenant, previous.site, "refund",
                previous.charged, record.session_id, record.leg, previous.run, end_us,
                f"rerated as run {rating.run}", rating.rated_us,
            )
        )  # fmt: skip
    if rating.charged:
        out.append(
            LedgerEntry(
                f"{key}:{rating.run}:charge", rating.account, rating.tenant, rating.site, "charge",
                -rating.charged, record.session_id, record.leg, rating.run, end_us,
                f"{rating.destination} {rating.billed_s} s", rating.rated_us,
            )
        )  # fmt: skip
    return out


def _account(row: Sequence[Any]) -> Account:
    return Account(*row)


def scope(account: Account) -> tuple[str, tuple[Any, ...]]:
    """SQL condition selecting the ledger rows of ``account`` and everything below it."""
    if account.level == "user":
        return "account = ?", (account.id,)
    if account.level == "site":
        return "tenant = ? AND site = ?", (account.tenant, account.site)
    return "tenant = ?", (account.tenant,)


def _balance_keys(account: str, tenant: str, site: str) -> tuple[str, str, str]:
    """The ``billing_balances`` rows (user, site, tenant) that sum a ledger row of ``account``."""
    return f"account:{account}", f"site:{tenant}/{site}", f"tenant:{tenant}"


def balance_scope(account: Account) -> str:
    """The ``billing_balances`` row holding the sum of ``scope(account)``'s ledger rows."""
    user, site, tenant = _balance_keys(account.id, account.tenant, account.site)
    return user if account.level == "user" else site if account.level == "site" else tenant


# One statement for the three scopes: on SQLite each statement hands the GIL to the
# database thread and back.
_MOVE_BALANCES = (
    "INSERT INTO billing_balances (scope, amount) VALUES (?, ?), (?, ?), (?, ?) "
    "ON CONFLICT (scope) DO UPDATE SET amount = billing_balances.amount + excluded.amount"
)


async def _moved(tx: Tx, account: str, tenant: str, site: str, amount: int) -> None:
    """A ledger row was posted: move every balance that sums it, in the same transaction."""
    user_key, site_key, tenant_key = _balance_keys(account, tenant, site)
    await tx.execute(_MOVE_BALANCES, user_key, amount, site_key, amount, tenant_key, amount)


@dataclass(frozen=True)
class ChainView:
    """What one live decision reads, in one transaction: an account chain, its plans, its money.

    ``balance`` and ``spent`` hold only the accounts that have a credit limit and an
    hourly spend limit respectively (and are empty unless asked for).
    """

    chain: list[Account]  # leaf first
    plans: dict[str, list[tuple[int, str]]]  # oldest first, per account of the chain
    balance: dict[str, int]
    spent: dict[str, int]


_ACCOUNTS_BY_ID = f"SELECT {_ACCOUNT_COLUMNS} FROM billing_accounts WHERE id IN "
_PUT_ACCOUNT = f"INSERT INTO billing_accounts ({_ACCOUNT_COLUMNS}, created_us) VALUES ({_q(9)}) ON CONFLICT (id) "
_REPLACE_ACCOUNT = (
    "DO UPDATE SET payment = excluded.payment, credit_limit = excluded.credit_limit, "
    "max_concurrent = excluded.max_concurrent, max_spend_per_hour = excluded.max_spend_per_hour"
)
_INSERT_CALL = (
    f"INSERT INTO billing_calls ({_CALLS}, current_run, status) VALUES ({_q(len(CALL_COLUMNS) + 2)}) "
    "ON CONFLICT (session_id, leg) DO NOTHING"
)
_GET_CALL = (
    f"SELECT {_CALLS_C}, {_RATINGS_R} FROM billing_calls c JOIN billing_ratings r "
    "ON r.session_id = c.session_id AND r.leg = c.leg AND r.run = c.current_run "
    "WHERE c.session_id = ? AND c.leg = ?"
)
_DROP_OPEN_CALL = "DELETE FROM billing_open_calls WHERE session_id = ? AND leg = ?"
# Bumped in the same transaction as every change to an account or a plan, by whichever process
# makes it: a reader that sees the version it last read knows its copies are still current.
_ACCOUNTS_VERSION = "SELECT value FROM billing_meta WHERE name = 'accounts_version'"
# How long one read of it stands for a chain without limits (LedgerStore.chain_view).
VERSION_RECHECK_S = 0.1
_ACCOUNTS_VERSION_VALUE = f"({_ACCOUNTS_VERSION})"
_BUMP_ACCOUNTS_VERSION = "UPDATE billing_meta SET value = value + 1 WHERE name = 'accounts_version'"
_MAX_CACHED_CHAINS = 10_000
# The writes of live calls (an open call's checkpoint, a finished call's charge) may wait this
# long to share one commit (one fsync) with each other instead of paying one each: under load
# that is a commit per many calls. The caller still waits until its write is durable, so the
# order live billing relies on holds (a charge is durable before its reservation is released).
# A crash within the wait loses the write, as it loses the call record's answer checkpoint
# (batched as long); the call record itself, durable before the call is acknowledged as
# ended, stays the source a rerating charges from.
_LIVE_WRITE_LINGER_S = 0.1

Plans = dict[str, list[tuple[int, str]]]


async def _get_accounts(tx: Tx, ids: Sequence[str]) -> dict[str, Account]:
    if not ids:
        return {}
    rows = await tx.fetch(f"{_ACCOUNTS_BY_ID}({_q(len(ids))})", *ids)
    return {row[0]: _account(row) for row in rows}


async def _chain(tx: Tx, account_id: str) -> list[Account] | None:
    account = (await _get_accounts(tx, [account_id])).get(account_id)
    if account is None:
        return None
    parents = await _get_accounts(tx, list(account.parent_ids))
    return [account] + [parents[p] for p in account.parent_ids if p in parents]


async def _plans(tx: Tx, accounts: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
    out: dict[str, list[tuple[int, str]]] = {a: [] for a in accounts}
    if not accounts:
        return out
    rows = await tx.fetch(
        f"SELECT account, active_from, tariff FROM billing_plans WHERE account IN ({_q(len(accounts))}) "
        "ORDER BY account, active_from",
        *accounts,
    )
    for account, start, tariff in rows:
        out[account].append((start, tariff))
    return out


_BALANCE = "SELECT amount FROM billing_balances WHERE scope = ?"


def _limited(chain: Sequence[Account], since_us: int | None) -> tuple[list[Account], list[Account]]:
    """The accounts of a chain whose balance, and whose spend since ``since_us``, a view reads
    (none without ``since_us``)."""
    if since_us is None:
        return [], []
    return [a for a in chain if a.credit is not None], [a for a in chain if a.max_spend_per_hour is not None]


async def _balance(tx: Tx, account: Account) -> int:
    rows = await tx.fetch(_BALANCE, balance_scope(account))
    return int(rows[0][0]) if rows else 0


def spent_since_sql(account: Account) -> tuple[str, tuple[Any, ...]]:
    """The query for ``account``'s charges less refunds since a time (its last parameter):
    each scope has an index ending in ``at_us``, so only that window's rows are read."""
    where, args = scope(account)
    sql = (
        f"SELECT COALESCE(SUM(amount), 0) FROM billing_ledger WHERE {where} "
        "AND kind IN ('charge', 'refund') AND at_us >= ?"
    )
    return sql, args


async def _spent_since(tx: Tx, account: Account, since_us: int) -> int:
    sql, args = spent_since_sql(account)
    rows = await tx.fetch(sql, *args, since_us)
    return -int(rows[0][0])


async def _add_rating(tx: Tx, record: CallRecord, rating: Rating, previous: Rating | None) -> None:
    await tx.execute(
        f"INSERT INTO billing_ratings ({_RATINGS}) VALUES ({_q(len(RATING_COLUMNS))})", *rating_row(rating)
    )
    entries = call_entries(record, rating, previous, call_row(record)[12])
    for e in entries:
        if await tx.execute(
            "INSERT INTO billing_ledger (entry, account, tenant, site, kind, amount, session_id, leg, run, "
            f"at_us, note, created_us) VALUES ({_q(12)}) ON CONFLICT (entry) DO NOTHING",
            e.entry, e.account, e.tenant, e.site, e.kind, e.amount, e.session_id, e.leg, e.run, e.at_us,
            e.note, e.created_us,
        ):  # fmt: skip
            await _moved(tx, e.account, e.tenant, e.site, e.amount)


class LedgerStore:
    """Each method is one transaction (``Database.run``): on SQLite one hop to its thread."""

    def __init__(self, db: Database, clock: Callable[[], float] = time.monotonic) -> None:
        self.db = db
        # Account chains and their plans as of ``_chains_version`` of the accounts, for
        # chain_view: on every call's authorize and answer, one small read then replaces three.
        self._chains: dict[str, tuple[list[Account], Plans]] = {}
        self._chains_version: int | None = None
        # When that version was last read. A chain without limits needs nothing else read, so
        # within VERSION_RECHECK_S of it no read at all: a change made elsewhere (the CLI,
        # another gateway) reaches calls that start that much later at most; ours, at once.
        self._clock = clock
        self._version_read_at = -math.inf

    async def close(self) -> None:
        await self.db.close()

    # Accounts and plans.

    async def put_account(self, account: Account, now_us: int, *, replace: bool) -> bool:
        return (await self.put_accounts([(account, replace)], now_us))[0]

    async def put_accounts(self, accounts: Sequence[tuple[Account, bool]], now_us: int) -> list[bool]:
        """Create (or, where paired with True, change) accounts in one transaction; which rows changed."""

        async def body(tx: Tx) -> list[bool]:
            out = []
            for a, replace in accounts:
                changed = await tx.execute(
                    _PUT_ACCOUNT + (_REPLACE_ACCOUNT if replace else "DO NOTHING"),
                    a.id, a.level, a.tenant, a.site, a.payment, a.credit_limit, a.max_concurrent,
                    a.max_spend_per_hour, now_us,
                )  # fmt: skip
                out.append(changed == 1)
            if any(out):
                await tx.execute(_BUMP_ACCOUNTS_VERSION)
            return out

        try:
            return await self.db.run(body)
        finally:
            self._version_read_at = -math.inf

    async def get_accounts(self, ids: Sequence[str]) -> dict[str, Account]:
        if not ids:
            return {}

        async def body(tx: Tx) -> dict[str, Account]:
            return await _get_accounts(tx, ids)

        return await self.db.run(body, write=False)

    async def chain(self, account_id: str) -> list[Account] | None:
        """The account and its ancestors, leaf first (None if there is no such account)."""

        async def body(tx: Tx) -> list[Account] | None:
            return await _chain(tx, account_id)

        return await self.db.run(body, write=False)

    async def chain_view(self, account_id: str, since_us: int | None = None) -> ChainView | None:
        """The account's chain and plans, and with ``since_us`` the balances and spend since then
        of the accounts that have limits, read together in one transaction."""

        known_version = self._chains_version
        known = self._chains.get(account_id) if known_version is not None else None
        read_at = self._clock()
        if known is not None:
            if read_at - self._version_read_at < VERSION_RECHECK_S and _limited(known[0], since_us) == ([], []):
                return ChainView(known[0], known[1], {}, {})
            quick = await self._cached_chain_view(known, known_version, since_us)
            if quick is not None:
                self._version_read_at = read_at
                return quick

        async def body(tx: Tx) -> tuple[int | None, bool, ChainView | None]:
            rows = await tx.fetch(_ACCOUNTS_VERSION)
            version: int | None = int(rows[0][0]) if rows else None
            cached = known if version == known_version else None
            if cached is not None:
                chain, plans = cached
            else:
                found = await _chain(tx, account_id)
                if found is None:
                    return version, False, None
                chain, plans = found, await _plans(tx, [a.id for a in found])
            balances, spending = _limited(chain, since_us)
            balance = {a.id: await _balance(tx, a) for a in balances}
            spent = {a.id: await _spent_since(tx, a, since_us) for a in spending if since_us is not None}
            return version, cached is None, ChainView(chain, plans, balance, spent)

        version, fresh, view = await self.db.run(body, write=False, quick=True)
        # Kept here, not in the body: on some engines the body runs on another thread.
        if version != self._chains_version or len(self._chains) >= _MAX_CACHED_CHAINS:
            self._chains = {}
            self._chains_version = version
        self._version_read_at = read_at
        if fresh and view is not None and version is not None:
            self._chains[account_id] = (view.chain, view.plans)
        return view

    async def _cached_chain_view(
        self, known: tuple[list[Account], Plans], known_version: int | None, since_us: int | None
    ) -> ChainView | None:
        """A known chain's view in one statement: the accounts version, and each limited
        account's balance and spend as subqueries (one snapshot, no transaction to open and
        close). None when the version moved: the caller reads everything again."""
        chain, plans = known
        columns = [_ACCOUNTS_VERSION_VALUE]
        args: list[Any] = []
        balances, spending = _limited(chain, since_us)
        for account in balances:
            columns.append(f"({_BALANCE})")
            args.append(balance_scope(account))
        for account in spending:
            sql, scope_args = spent_since_sql(account)
            columns.append(f"({sql})")
            args.extend((*scope_args, since_us))
        row = await self.db.read_row(f"SELECT {', '.join(columns)}", *args)
        if row is None or row[0] is None or int(row[0]) != known_version:
            return None
        values = iter(row[1:])
        balance = {a.id: int(next(values) or 0) for a in balances}
        spent = {a.id: -int(next(values)) for a in spending}
        return ChainView(chain, plans, balance, spent)

    async def list_accounts(self, tenant: str | None = None) -> list[Account]:
        where, args = ("WHERE tenant = ?", (tenant,)) if tenant else ("", ())

        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(f"SELECT {_ACCOUNT_COLUMNS} FROM billing_accounts {where} ORDER BY id", *args)

        return [_account(r) for r in await self.db.run(body, write=False)]

    async def tenants(self) -> list[str]:
        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT tenant FROM billing_accounts UNION SELECT tenant FROM billing_calls ORDER BY 1"
            )

        return [r[0] for r in await self.db.run(body, write=False)]

    async def set_plan(self, account: str, tariff: str, active_from_us: int) -> None:
        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO billing_plans (account, active_from, tariff) VALUES (?,?,?) "
                "ON CONFLICT (account, active_from) DO UPDATE SET tariff = excluded.tariff",
                account,
                active_from_us,
                tariff,
            )
            await tx.execute(_BUMP_ACCOUNTS_VERSION)

        try:
            await self.db.run(body)
        finally:
            self._version_read_at = -math.inf

    async def plans(self, accounts: Sequence[str]) -> dict[str, list[tuple[int, str]]]:
        """Each account's plans, oldest first."""
        if not accounts:
            return {}

        async def body(tx: Tx) -> dict[str, list[tuple[int, str]]]:
            return await _plans(tx, accounts)

        return await self.db.run(body, write=False)

    # Calls, ratings, ledger.

    async def insert_call(self, record: CallRecord, rating: Rating) -> Rating | None:
        """Store a new call with its first rating run and charge; None if the call was already stored."""
        stored, new = await self.store_call(record, rating, close_open=False)
        return rating if new else None

    async def store_call(
        self, record: CallRecord, rating: Rating, *, close_open: bool, live: bool = False
    ) -> tuple[Rating, bool]:
        """Store a new call with its first rating run and charge, in one transaction; (the call's
        current rating, whether it was new). A call already stored keeps the rating it has.

        With ``close_open`` the call's open-call checkpoint goes in the same transaction, so the
        charge and the end of live tracking are committed together. ``live``: a call that just
        ended, one of many in flight, whose write may share a commit with theirs (callers that
        store calls one after another must not set it: each would wait out the linger).
        """

        async def body(tx: Tx) -> tuple[Rating, bool]:
            if close_open:
                await tx.execute(_DROP_OPEN_CALL, record.session_id, record.leg)
            if await tx.execute(_INSERT_CALL, *call_row(record), rating.run, rating.status):
                await _add_rating(tx, record, rating, None)
                return rating, True
            rows = await tx.fetch(_GET_CALL, record.session_id, record.leg)
            if not rows:  # pragma: no cover - a call is never deleted
                raise LedgerError(f"call {record.session_id}/{record.leg} vanished")
            return _split(rows[0])[1], False

        return await self.db.run(body, linger_s=_LIVE_WRITE_LINGER_S if live else 0.0)

    async def insert_calls(self, pairs: Sequence[tuple[CallRecord, Rating]]) -> int:
        """Batch form of ``insert_call`` (one transaction); returns how many were new."""

        async def body(tx: Tx) -> int:
            new = 0
            for record, rating in pairs:
                if await tx.execute(_INSERT_CALL, *call_row(record), rating.run, rating.status):
                    new += 1
                    await _add_rating(tx, record, rating, None)
            return new

        return await self.db.run(body)

    async def add_run(self, record: CallRecord, rating: Rating, previous: Rating) -> bool:
        """Rerate: a new run replaces ``previous`` as current, refunding its charge. False if raced."""

        async def body(tx: Tx) -> bool:
            moved = await tx.execute(
                "UPDATE billing_calls SET current_run = ?, status = ? WHERE session_id = ? AND leg = ? "
                "AND current_run = ?",
                rating.run,
                rating.status,
                record.session_id,
                record.leg,
                previous.run,
            )
            if not moved:
                return False
            await _add_rating(tx, record, rating, previous)
            return True

        return await self.db.run(body)

    async def get_call(self, session_id: str, leg: str) -> tuple[CallRecord, Rating] | None:
        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(_GET_CALL, session_id, leg)

        rows = await self.db.run(body, write=False)
        return _split(rows[0]) if rows else None

    async def runs(self, session_id: str, leg: str) -> list[Rating]:
        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(
                f"SELECT {_RATINGS} FROM billing_ratings WHERE session_id = ? AND leg = ? ORDER BY run",
                session_id,
                leg,
            )

        return [rating_from_row(r) for r in await self.db.run(body, write=False)]

    async def calls_page(
        self,
        *,
        tenant: str | None,
        start_us: int,
        end_us: int,
        after: tuple[int, str, str] | None,
        limit: int,
        statuses: Sequence[str] = (),
    ) -> list[tuple[CallRecord, Rating]]:
        """Calls that started in [start_us, end_us), in (start, session, leg) order, after ``after``."""
        where = ["c.start_us >= ?", "c.start_us < ?"]
        args: list[Any] = [start_us, end_us]
        if tenant is not None:
            where.insert(0, "c.tenant = ?")
            args.insert(0, tenant)
        if statuses:
            where.append(f"c.status IN ({_q(len(statuses))})")
            args += list(statuses)
        if after is not None:
            where.append("(c.start_us, c.session_id, c.leg) > (?, ?, ?)")
            args += list(after)

        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(
                f"SELECT {_CALLS_C}, {_RATINGS_R} FROM billing_calls c JOIN billing_ratings r "
                "ON r.session_id = c.session_id AND r.leg = c.leg AND r.run = c.current_run "
                f"WHERE {' AND '.join(where)} ORDER BY c.start_us, c.session_id, c.leg LIMIT ?",
                *args,
                limit,
            )

        return [_split(r) for r in await self.db.run(body, write=False)]

    async def count_calls(self, *, tenant: str | None, start_us: int, end_us: int) -> int:
        where = "start_us >= ? AND start_us < ?"
        args: list[Any] = [start_us, end_us]
        if tenant is not None:
            where, args = "tenant = ? AND " + where, [tenant, *args]

        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(f"SELECT COUNT(*) FROM billing_calls WHERE {where}", *args)

        return int((await self.db.run(body, write=False))[0][0])

    async def topup(self, account: Account, amount: int, reference: str, note: str, now_us: int) -> bool:
        """Credit ``account``; False (and no change) if ``reference`` was already used for the same top-up."""
        if amount == 0:
            raise LedgerError("a top-up needs a non-zero amount")
        entry = f"topup:{reference}"

        async def body(tx: Tx) -> list[Row] | None:
            if await tx.execute(
                "INSERT INTO billing_ledger (entry, account, tenant, site, kind, amount, at_us, note, "
                "created_us) "
                f"VALUES ({_q(9)}) ON CONFLICT (entry) DO NOTHING",
                entry, account.id, account.tenant, account.site, "topup", amount, now_us, note, now_us,
            ):  # fmt: skip
                await _moved(tx, account.id, account.tenant, account.site, amount)
                return None
            return await tx.fetch("SELECT account, amount FROM billing_ledger WHERE entry = ?", entry)

        rows = await self.db.run(body)
        if rows is None:
            return True
        if rows and (rows[0][0], rows[0][1]) == (account.id, amount):
            return False
        raise LedgerError(f"reference {reference!r} was already used for a different top-up")

    async def balance(self, account: Account) -> int:
        async def body(tx: Tx) -> int:
            return await _balance(tx, account)

        return await self.db.run(body, write=False)

    async def spent_since(self, account: Account, since_us: int) -> int:
        """Charges less refunds of calls that ended at or after ``since_us`` (micro-units, positive)."""

        async def body(tx: Tx) -> int:
            return await _spent_since(tx, account, since_us)

        return await self.db.run(body, write=False)

    async def ledger(self, account: Account, limit: int = 100) -> list[LedgerEntry]:
        where, args = scope(account)

        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT entry, account, tenant, site, kind, amount, session_id, leg, run, at_us, "
                "note, created_us "
                f"FROM billing_ledger WHERE {where} ORDER BY created_us DESC, entry DESC LIMIT ?",
                *args,
                limit,
            )

        return [LedgerEntry(*r) for r in await self.db.run(body, write=False)]

    # Open calls (live control checkpoints).

    async def put_open_call(
        self, session_id: str, leg: str, node: str, record: str, chain: str, reserved: int, checkpoint_us: int
    ) -> None:
        async def body(tx: Tx) -> None:
            await tx.execute(
                "INSERT INTO billing_open_calls (session_id, leg, node, record, chain, reserved, "
                "checkpoint_us) "
                "VALUES (?,?,?,?,?,?,?) ON CONFLICT (session_id, leg) DO UPDATE SET "
                "reserved = excluded.reserved, checkpoint_us = excluded.checkpoint_us",
                session_id, leg, node, record, chain, reserved, checkpoint_us,
            )  # fmt: skip

        await self.db.run(body, linger_s=_LIVE_WRITE_LINGER_S)

    async def checkpoint(self, points: Sequence[tuple[str, str, int, int]]) -> None:
        """(session_id, leg, reserved, checkpoint_us) for each open call, in one transaction."""

        async def body(tx: Tx) -> None:
            await tx.executemany(
                "UPDATE billing_open_calls SET reserved = ?, checkpoint_us = ? WHERE session_id = ? AND leg = ?",
                [(reserved, at, sid, leg) for sid, leg, reserved, at in points],
            )

        await self.db.run(body)  # already one write for many calls; the live timer waits on it

    async def drop_open_call(self, session_id: str, leg: str) -> None:
        async def body(tx: Tx) -> None:
            await tx.execute(_DROP_OPEN_CALL, session_id, leg)

        await self.db.run(body)

    async def open_call_reserved(self, session_id: str, leg: str) -> int | None:
        """The reservation checkpointed for one open call (-1: not limited); None if it is not open."""

        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT reserved FROM billing_open_calls WHERE session_id = ? AND leg = ?", session_id, leg
            )

        rows = await self.db.run(body, write=False)
        return int(rows[0][0]) if rows else None

    async def open_calls(self, node: str) -> list[tuple[str, str, str, str, int, int]]:
        async def body(tx: Tx) -> list[Row]:
            return await tx.fetch(
                "SELECT session_id, leg, record, chain, reserved, checkpoint_us FROM billing_open_calls "
                "WHERE node = ? ORDER BY session_id, leg",
                node,
            )

        return [(r[0], r[1], r[2], r[3], int(r[4]), int(r[5])) for r in await self.db.run(body, write=False)]

    async def stream_calls(
        self,
        *,
        tenant: str | None,
        start_us: int,
        end_us: int,
        page: int = 1000,
        statuses: Sequence[str] = (),
    ) -> AsyncIterator[tuple[CallRecord, Rating]]:
        """Every call in the window, a page at a time: memory stays flat however long the month."""
        after: tuple[int, str, str] | None = None
        while True:
            rows = await self.calls_page(
                tenant=tenant, start_us=start_us, end_us=end_us, after=after, limit=page, statuses=statuses
            )
            for row in rows:
                yield row
            if len(rows) < page:
                return
            last = rows[-1][0]
            after = (call_row(last)[10], last.session_id, last.leg)


def _split(row: Sequence[Any]) -> tuple[CallRecord, Rating]:
    n = len(CALL_COLUMNS)
    return record_from_row(tuple(row[:n])), rating_from_row(tuple(row[n:]))
