"""Open the billing store the configuration asks for."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from billing.store.ledger import LedgerStore
from billing.store.schema import SCHEMA
from billing.store.sql import PostgresBillingDatabase, SqliteBillingDatabase


async def open_store(
    backend: Literal["sqlite", "postgresql"], *, sqlite_path: Path | None = None, postgres_dsn: str = ""
) -> LedgerStore:
    if backend == "postgresql":
        return LedgerStore(await PostgresBillingDatabase.connect(postgres_dsn, SCHEMA))
    if sqlite_path is None:
        raise ValueError("the SQLite store needs a path")
    return LedgerStore(SqliteBillingDatabase(sqlite_path, SCHEMA))
