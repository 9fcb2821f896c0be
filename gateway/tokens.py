"""API tokens: `seabridge token create --admin | --tenant T`; only a hash is stored.

A token reads ``sbt_<id>_<secret>``: the id finds the row, the secret is checked
against its SHA-256 in constant time. A tenant token sees only its tenant.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime

from gateway.storage.sqlite import SqliteDatabase

TOKENS_SCHEMA = """
CREATE TABLE IF NOT EXISTS api_tokens (
    id          TEXT PRIMARY KEY,
    secret_hash TEXT NOT NULL,
    tenant      TEXT,            -- NULL: admin, every tenant
    label       TEXT NOT NULL,
    created_at  TEXT NOT NULL,
    revoked_at  TEXT
);
"""


class TokenError(Exception):
    """A token operation that cannot be done."""


@dataclass(frozen=True)
class Scope:
    """What a token may see: one tenant, or (tenant None) all of them."""

    token_id: str
    tenant: str | None

    @property
    def admin(self) -> bool:
        return self.tenant is None

    def allows(self, tenant: str) -> bool:
        return self.tenant is None or self.tenant == tenant


@dataclass(frozen=True)
class TokenInfo:
    id: str
    tenant: str | None
    label: str
    created_at: str
    revoked_at: str | None


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class TokenStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def create(self, tenant: str | None, label: str = "") -> str:
        token_id = secrets.token_hex(6)
        secret = secrets.token_urlsafe(32)

        def q(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO api_tokens VALUES (?,?,?,?,?,NULL)",
                (token_id, _hash(secret), tenant, label, datetime.now(UTC).isoformat()),
            )

        await self._db.run(q)
        return f"sbt_{token_id}_{secret}"

    async def check(self, token: str) -> Scope | None:
        parts = token.split("_", 2)
        if len(parts) != 3 or parts[0] != "sbt":
            return None
        token_id, secret = parts[1], parts[2]

        def q(conn: sqlite3.Connection) -> tuple[str, str | None] | None:
            row = conn.execute(
                "SELECT secret_hash, tenant FROM api_tokens WHERE id=? AND revoked_at IS NULL", (token_id,)
            ).fetchone()
            return (row[0], row[1]) if row else None

        row = await self._db.run(q)
        expected = row[0] if row else _hash("no such token")
        if not hmac.compare_digest(expected, _hash(secret)) or row is None:
            return None
        return Scope(token_id, row[1])

    async def revoke(self, token_id: str) -> None:
        def q(conn: sqlite3.Connection) -> None:
            cur = conn.execute(
                "UPDATE api_tokens SET revoked_at=? WHERE id=? AND revoked_at IS NULL",
                (datetime.now(UTC).isoformat(), token_id),
            )
            if cur.rowcount == 0:
                raise TokenError(f"no active token {token_id}")

        await self._db.run(q)

    async def list(self) -> list[TokenInfo]:
        def q(conn: sqlite3.Connection) -> list[TokenInfo]:
            rows = conn.execute(
                "SELECT id, tenant, label, created_at, revoked_at FROM api_tokens ORDER BY created_at"
            ).fetchall()
            return [TokenInfo(*r) for r in rows]

        return await self._db.run(q)
