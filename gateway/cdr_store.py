"""Durable call records. A record is committed before the call is reported ended."""

from __future__ import annotations

import sqlite3
from datetime import datetime
from typing import Any, Protocol

from gateway.cdr import CALL_RECORD_COLUMNS, CallRecord
from gateway.storage.sqlite import SqliteDatabase

CDR_SCHEMA = """
CREATE TABLE IF NOT EXISTS call_records (
    session_id  TEXT NOT NULL,
    leg         TEXT NOT NULL,
    node        TEXT NOT NULL,
    tenant      TEXT NOT NULL,
    site        TEXT NOT NULL,
    caller      TEXT NOT NULL,
    callee      TEXT NOT NULL,
    account     TEXT NOT NULL,
    ingress     INTEGER NOT NULL,
    category    TEXT NOT NULL,
    start       TEXT NOT NULL,
    answer      TEXT,
    "end"       TEXT NOT NULL,
    disposition TEXT NOT NULL,
    sip_status  INTEGER NOT NULL,
    codec       TEXT NOT NULL,
    packets_in  INTEGER NOT NULL,
    packets_out INTEGER NOT NULL,
    bytes_in    INTEGER NOT NULL,
    bytes_out   INTEGER NOT NULL,
    call_id     TEXT NOT NULL,
    ended_by    TEXT NOT NULL,
    PRIMARY KEY (session_id, leg, node)
);
CREATE INDEX IF NOT EXISTS call_records_tenant_start ON call_records (tenant, start);
"""

_TIME_COLUMNS = {"start", "answer", "end"}
_QUOTED = ", ".join(f'"{c}"' for c in CALL_RECORD_COLUMNS)


class CdrStore(Protocol):
    async def write(self, record: CallRecord) -> bool:
        """Store durably; False if this (session, leg, node) was already stored."""
        ...

    async def list(self, tenant: str | None = None, limit: int = 1000) -> list[CallRecord]: ...


def record_to_row(record: CallRecord) -> tuple[Any, ...]:
    row: list[Any] = []
    for name in CALL_RECORD_COLUMNS:
        value = getattr(record, name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, bool):
            value = int(value)
        row.append(value)
    return tuple(row)


def row_to_record(row: tuple[Any, ...]) -> CallRecord:
    values = dict(zip(CALL_RECORD_COLUMNS, row, strict=True))
    for name in _TIME_COLUMNS:
        if values[name] is not None:
            values[name] = datetime.fromisoformat(values[name])
    values["ingress"] = bool(values["ingress"])
    return CallRecord(**values)


class SqliteCdrStore:
    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def write(self, record: CallRecord) -> bool:
        row = record_to_row(record)

        def q(conn: sqlite3.Connection) -> bool:
            placeholders = ",".join("?" * len(row))
            cur = conn.execute(f"INSERT OR IGNORE INTO call_records ({_QUOTED}) VALUES ({placeholders})", row)
            return cur.rowcount == 1

        return await self._db.run(q)

    async def list(self, tenant: str | None = None, limit: int = 1000) -> list[CallRecord]:
        def q(conn: sqlite3.Connection) -> list[CallRecord]:
            sql = f"SELECT {_QUOTED} FROM call_records"
            args: tuple[Any, ...] = ()
            if tenant is not None:
                sql += " WHERE tenant=?"
                args = (tenant,)
            sql += " ORDER BY start DESC LIMIT ?"
            return [row_to_record(r) for r in conn.execute(sql, (*args, limit))]

        return await self._db.run(q)
