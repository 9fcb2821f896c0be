"""Users of tenants: who may register, with which credentials, at which site.

Passwords are never stored: only the digest HA1 values, H(user:realm:password),
for each algorithm we offer (MD5 and SHA-256, RFC 8760). The realm is the
tenant's domain, so a user's HA1 is bound to their tenant.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
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


def _row_to_user(row: tuple[str, str, str, str, str, str | None]) -> User:
    return User(*row)


class SqliteUserStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db
        # Every call looks up its caller and callee: read on the loop, not via the DB thread.
        self._reader = SqliteReader(db)

    async def get(self, tenant: str, username: str) -> User | None:
        row = await self._reader.fetch_one(_SELECT + " WHERE tenant=? AND username=?", (tenant, username))
        return _row_to_user(row) if row else None

    async def by_number(self, tenant: str, number: str) -> User | None:
        row = await self._reader.fetch_one(_SELECT + " WHERE tenant=? AND number=?", (tenant, number))
        return _row_to_user(row) if row else None

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

        await self._db.run(q)

    async def remove(self, tenant: str, username: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            cur = conn.execute("DELETE FROM users WHERE tenant=? AND username=?", (tenant, username))
            if cur.rowcount == 0:
                raise UserError(f"no user {username}@{tenant}")

        await self._db.run(q)

    async def list(self, tenant: str | None = None) -> list[User]:
        def q(conn: sqlite3.Connection) -> list[User]:
            sql = _SELECT
            args: tuple[str, ...] = ()
            if tenant is not None:
                sql += " WHERE tenant=?"
                args = (tenant,)
            return [_row_to_user(r) for r in conn.execute(sql + " ORDER BY tenant, username", args)]

        return await self._db.run(q)
