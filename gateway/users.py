"""Users of tenants: who may register, with which credentials, at which site.

Passwords are never stored: only the digest HA1 values, H(user:realm:password),
for each algorithm we offer (MD5 and SHA-256, RFC 8760). The realm is the
tenant's domain, so a user's HA1 is bound to their tenant.
"""

from __future__ import annotations

import hashlib
import math
import re
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from gateway.storage.sqlite import SqliteDatabase
from gateway.storage.sqlite_reader import SqliteReader

USERS_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    tenant      TEXT NOT NULL,
    username    TEXT NOT NULL,
    site        TEXT NOT NULL,
    ha1_md5     TEXT NOT NULL,
    ha1_sha256  TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    number      TEXT,  -- an extension/number that reaches the user (calls from trunks dial numbers)
    PRIMARY KEY (tenant, username),
    UNIQUE (tenant, number)
);
-- Counts changes to users, whoever makes them (the CLI is another process): lookups are
-- cached, and the cache is checked against this.
CREATE TABLE IF NOT EXISTS users_version (
    id      INTEGER PRIMARY KEY CHECK (id = 1),
    version INTEGER NOT NULL
);
INSERT OR IGNORE INTO users_version (id, version) VALUES (1, 0);
CREATE TRIGGER IF NOT EXISTS users_added AFTER INSERT ON users
    BEGIN UPDATE users_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS users_changed AFTER UPDATE ON users
    BEGIN UPDATE users_version SET version = version + 1; END;
CREATE TRIGGER IF NOT EXISTS users_removed AFTER DELETE ON users
    BEGIN UPDATE users_version SET version = version + 1; END;
"""

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")


class UserError(Exception):
    """A user operation that cannot be done (bad name, duplicate, unknown user)."""


@dataclass(frozen=True)
class User:
    tenant: str
    username: str
    site: str
    ha1_md5: str
    ha1_sha256: str
    number: str | None = None

    @property
    def aor(self) -> str:
        return f"{self.username}@{self.tenant}"

    def ha1(self, algorithm: str) -> str:
        return self.ha1_sha256 if algorithm == "SHA-256" else self.ha1_md5


def parse_address(address: str) -> tuple[str, str]:
    """'alice@acme' -> ('alice', 'acme'), with the tenant lower-cased."""
    username, sep, tenant = address.partition("@")
    if not sep or not _NAME.match(username) or not _DOMAIN.match(tenant):
        raise UserError(f"{address!r} is not a user address like alice@acme")
    return username, tenant.lower()


def ha1(algorithm: str, username: str, realm: str, password: str) -> str:
    h = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return h(f"{username}:{realm}:{password}".encode()).hexdigest()


def make_user(address: str, site: str, password: str, number: str | None = None) -> User:
    username, tenant = parse_address(address)
    if not _NAME.match(site):
        raise UserError(f"site {site!r}: use letters, digits, '.', '_', '+' or '-'")
    if len(password) < 8:
        raise UserError("password: use at least 8 characters")
    if number is not None and not (number.isdigit() and 0 < len(number) <= 20):
        raise UserError(f"number {number!r}: use up to 20 digits")
    return User(
        tenant=tenant,
        username=username,
        site=site,
        ha1_md5=ha1("MD5", username, tenant, password),
        ha1_sha256=ha1("SHA-256", username, tenant, password),
        number=number,
    )


class UserStore(Protocol):
    async def get(self, tenant: str, username: str) -> User | None: ...

    async def by_number(self, tenant: str, number: str) -> User | None: ...

    async def add(self, user: User) -> None: ...

    async def remove(self, tenant: str, username: str) -> None: ...

    async def list(self, tenant: str | None = None) -> list[User]: ...


_SELECT = "SELECT tenant, username, site, ha1_md5, ha1_sha256, number FROM users"

# How stale a cached user may be: a removal made by another process (the CLI) is seen by
# calls that start this much later at most. One check per interval, instead of a read per
# lookup: each read on the loop hands the interpreter lock to the database threads and back,
# and every call looks up its caller and its callee. A name not found is not cached: a user
# just added is found at once.
RECHECK_S = 0.1
_MAX_CACHED = 50_000


def _row_to_user(row: tuple[str, str, str, str, str, str | None]) -> User:
    return User(*row)


class SqliteUserStore:
    def __init__(self, db: SqliteDatabase, clock: Callable[[], float] = time.monotonic) -> None:
        self._db = db
        # Every call looks up its caller and callee: read on the loop, not via the DB thread.
        self._reader = SqliteReader(db)
        self._clock = clock
        self._cache: dict[tuple[str, str, str], User] = {}
        self._version: int | None = None
        self._checked_at = -math.inf

    async def get(self, tenant: str, username: str) -> User | None:
        return await self._lookup("username", tenant, username)

    async def by_number(self, tenant: str, number: str) -> User | None:
        return await self._lookup("number", tenant, number)

    async def _lookup(self, column: str, tenant: str, value: str) -> User | None:
        now = self._clock()
        if now - self._checked_at >= RECHECK_S:
            row = await self._reader.fetch_one("SELECT version FROM users_version", ())
            version = row[0] if row else None
            if version != self._version:
                self._cache.clear()
                self._version = version
            self._checked_at = now
        key = (column, tenant, value)
        try:
            return self._cache[key]
        except KeyError:
            pass
        row = await self._reader.fetch_one(f"{_SELECT} WHERE tenant=? AND {column}=?", (tenant, value))
        if not row:
            return None
        user = _row_to_user(row)
        if len(self._cache) >= _MAX_CACHED:
            self._cache.clear()
        self._cache[key] = user
        return user

    def _changed(self) -> None:
        """This process changed users: its next lookup reads afresh."""
        self._cache.clear()
        self._checked_at = -math.inf

    def close(self) -> None:
        self._reader.close()

    async def add(self, user: User) -> None:
        def q(conn: sqlite3.Connection) -> None:
            try:
                conn.execute(
                    "INSERT INTO users (tenant, username, site, ha1_md5, ha1_sha256, created_at, number)"
                    " VALUES (?,?,?,?,?,?,?)",
                    (
                        user.tenant,
                        user.username,
                        user.site,
                        user.ha1_md5,
                        user.ha1_sha256,
                        datetime.now(UTC).isoformat(),
                        user.number,
                    ),
                )
            except sqlite3.IntegrityError as exc:
                if "number" in str(exc):
                    raise UserError(f"number {user.number} is already taken in {user.tenant}") from None
                raise UserError(f"user {user.aor} already exists") from None

        try:
            await self._db.run(q)
        finally:
            self._changed()

    async def remove(self, tenant: str, username: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM users WHERE tenant=? AND username=?", (tenant, username))
            if cur.rowcount == 0:
                raise UserError(f"no user {username}@{tenant}")

        try:
            await self._db.run(q)
        finally:
            self._changed()

    async def list(self, tenant: str | None = None) -> list[User]:
        def q(conn: sqlite3.Connection) -> list[User]:
            sql = _SELECT
            args: tuple[str, ...] = ()
            if tenant is not None:
                sql += " WHERE tenant=?"
                args = (tenant,)
            return [_row_to_user(r) for r in conn.execute(sql + " ORDER BY tenant, username", args)]

        return await self._db.run(q)
