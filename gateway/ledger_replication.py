"""Each gateway's ratings, replicated to HQ over the tunnel's control channel (DECISIONS.md).

A site rates its own calls and keeps its ledger; every rating run is also sent to the HQ node as
a store-and-forward tunnel message (kept on disk until HQ acknowledges it), so a site cut off
from HQ keeps rating and catches up when the link returns. HQ stores the site's rating as it is
(it does not rate again); the message id and the ledger's keys are (session id, leg, rating run),
so a repeat changes nothing.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from datetime import datetime
from typing import Any

from billing.records import Rating
from billing.store.ledger import LedgerStore
from gateway.cdr import CALL_RECORD_COLUMNS, CallRecord
from gateway.tunnel.service import TunnelService

log = logging.getLogger("seabridge.billing.replication")

TOPIC = "billing.rating"


def encode(record: CallRecord, rating: Rating) -> bytes:
    fields = {}
    for name in CALL_RECORD_COLUMNS:
        value = getattr(record, name)
        fields[name] = value.isoformat() if isinstance(value, datetime) else value
    return json.dumps({"record": fields, "rating": dataclasses.asdict(rating)}, separators=(",", ":")).encode()


def decode(body: bytes) -> tuple[CallRecord, Rating]:
    data: dict[str, Any] = json.loads(body)
    fields = dict(data["record"])
    for name in ("start", "answer", "end"):
        if fields[name] is not None:
            fields[name] = datetime.fromisoformat(fields[name])
    return CallRecord(**fields), Rating(**data["rating"])


def message_id(rating: Rating) -> str:
    return f"rating:{rating.session_id}:{rating.leg}:{rating.run}"


class LedgerSender:
    """At a site (or hub): hand every rating run to the tunnel for HQ."""

    def __init__(self, tunnel: TunnelService, hq_node: str) -> None:
        self._tunnel = tunnel
        self._hq = hq_node

    async def send(self, record: CallRecord, rating: Rating) -> None:
        await self._tunnel.send_message(self._hq, TOPIC, encode(record, rating), message_id(rating))


class LedgerReceiver:
    """At HQ: store the ratings sites send, idempotently."""

    def __init__(self, store: LedgerStore) -> None:
        self._store = store

    def attach(self, tunnel: TunnelService) -> None:
        tunnel.on_message(TOPIC, self.receive)

    async def receive(self, src: str, body: bytes) -> None:
        record, rating = decode(body)
        stored: bool
        if rating.run == 1:
            stored = await self._store.insert_call(record, rating) is not None
        else:
            runs = await self._store.runs(rating.session_id, rating.leg)
            previous = next((r for r in runs if r.run == rating.run - 1), None)
            stored = previous is not None and await self._store.add_run(record, rating, previous)
        log.info(
            "rating replicated" if stored else "rating already held",
            extra={"from": src, "session": rating.session_id, "leg": rating.leg, "run": rating.run},
        )
