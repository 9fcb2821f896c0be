"""The gateway's own embedded database: users and call records, under data_dir."""

from __future__ import annotations

from gateway.cdr_store import CDR_SCHEMA
from gateway.config import GatewayConfig
from gateway.storage.sqlite import SqliteDatabase
from gateway.tokens import TOKENS_SCHEMA
from gateway.users import USERS_SCHEMA


def open_gateway_db(config: GatewayConfig) -> SqliteDatabase:
    return SqliteDatabase(config.data_path / "gateway.db", USERS_SCHEMA + CDR_SCHEMA + TOKENS_SCHEMA)
