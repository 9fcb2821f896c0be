"""Store-and-forward messages between gateways over the control channels (e.g. ledger replication).

The sender keeps each message in an outbox (durable: SQLite under data_dir) until
the destination acknowledges it end to end; it resends when a route comes back
and every ``retry`` seconds, so a site cut off from HQ catches up later. Hubs relay
without storing. The receiver remembers recent message ids and acknowledges a
repeat without handing it to the application again; applications should still
make their handling idempotent (ledger rows keyed on session id, leg and rating
run), since the id memory is bounded and not durable.
"""

from __future__ import annotations

import sqlite3
from collections import OrderedDict
from dataclasses import dataclass
from typing import Protocol

from gateway.storage.sqlite import SqliteDatabase
from gateway.tunnel.control import Message


class OutboxStore(Protocol):
    async def put(self, message: Message) -> None: ...
    async def remove(self, message_id: str) -> None: ...
    async def pending(self) -> list[Message]: ...


class MemoryOutboxStore:
    def __init__(self) -> None:
        self._messages: dict[str, Message] = {}

    async def put(self, message: Message) -> None:
        self._messages.setdefault(message.message_id, message)

    async def remove(self, message_id: str) -> None:
        self._messages.pop(message_id, None)

    async def pending(self) -> list[Message]:
        return list(self._messages.values())


OUTBOX_SCHEMA = """
CREATE TABLE IF NOT EXISTS tunnel_outbox (
    message_id TEXT PRIMARY KEY,
    src        TEXT NOT NULL,
    dst        TEXT NOT NULL,
    topic      TEXT NOT NULL,
    body       BLOB NOT NULL,
    seq        INTEGER NOT NULL
);
"""


class SqliteOutboxStore:
    """The outbox in the gateway's embedded database; survives restarts and power cuts."""

    def __init__(self, db: SqliteDatabase) -> None:
        self._db = db

    async def put(self, message: Message) -> None:
        def _put(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT OR IGNORE INTO tunnel_outbox VALUES (?, ?, ?, ?, ?,"
                " (SELECT COALESCE(MAX(seq), 0) + 1 FROM tunnel_outbox))",
                (message.message_id, message.src, message.dst, message.topic, message.body),
            )

        await self._db.run(_put)

    async def remove(self, message_id: str) -> None:
        await self._db.run(lambda conn: conn.execute("DELETE FROM tunnel_outbox WHERE message_id = ?", (message_id,)))

    async def pending(self) -> list[Message]:
        def _pending(conn: sqlite3.Connection) -> list[Message]:
            rows = conn.execute("SELECT message_id, src, dst, topic, body FROM tunnel_outbox ORDER BY seq").fetchall()
            return [Message(r[0], r[1], r[2], r[3], bytes(r[4])) for r in rows]

        return await self._db.run(_pending)


@dataclass
class _Entry:
    message: Message
    next_send: float


class Outbox:
    """Which pending messages to (re)send when; sans-I/O (storage is the caller's)."""

    def __init__(self, retry: float) -> None:
        self.retry = retry
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    def add(self, message: Message, now: float) -> None:
        self._entries.setdefault(message.message_id, _Entry(message, now))

    def acknowledged(self, message_id: str) -> bool:
        return self._entries.pop(message_id, None) is not None

    def route_up(self, destination_reachable: set[str] | None, now: float) -> None:
        """A link came up: resend at once what was waiting (all, or for these destinations)."""
        for entry in self._entries.values():
            if destination_reachable is None or entry.message.dst in destination_reachable:
                entry.next_send = now

    def due(self, now: float) -> list[Message]:
        out = []
        for entry in self._entries.values():
            if entry.next_send <= now:
                out.append(entry.message)
                entry.next_send = now + self.retry
        return out

    def next_deadline(self) -> float | None:
        return min((e.next_send for e in self._entries.values()), default=None)

    def __len__(self) -> int:
        return len(self._entries)


class RecentIds:
    """A bounded memory of handled (src, message id) pairs."""

    def __init__(self, size: int = 100_000) -> None:
        self.size = size
        self._seen: OrderedDict[tuple[str, str], None] = OrderedDict()

    def __contains__(self, key: tuple[str, str]) -> bool:
        return key in self._seen

    def add(self, key: tuple[str, str]) -> None:
        self._seen[key] = None
        self._seen.move_to_end(key)
        while len(self._seen) > self.size:
            self._seen.popitem(last=False)
