"""Call records for the tests, as the gateway's B2BUA writes them."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from gateway.cdr import CallRecord

_ids = itertools.count(1)


def call(
    answer: datetime | None,
    seconds: float = 60,
    *,
    account: str = "alice@acme",
    to: str = "sip:+8613800000000@gw",
    session_id: str | None = None,
    leg: str = "a",
    ingress: bool = True,
    category: str = "voice",
    site: str = "kinshasa",
) -> CallRecord:
    start = (answer or datetime(2026, 10, 5, 2, 0, tzinfo=UTC)) - timedelta(seconds=5)
    end = (answer or start) + timedelta(seconds=seconds)
    tenant = account.rpartition("@")[2]
    return CallRecord(
        session_id=session_id or f"{next(_ids):032x}",
        leg=leg,
        node="kinshasa-gw",
        tenant=tenant,
        site=site,
        caller=f"sip:{account}",
        callee=to,
        account=account,
        ingress=ingress,
        category=category,  # type: ignore[arg-type]
        start=start,
        answer=answer,
        end=end if answer else start + timedelta(seconds=20),
        disposition="answered" if answer else "no_answer",
        sip_status=200 if answer else 480,
        codec="PCMA",
        packets_in=100,
        packets_out=100,
        bytes_in=17200,
        bytes_out=17200,
        call_id=f"cid-{session_id}",
        ended_by="caller",
    )
