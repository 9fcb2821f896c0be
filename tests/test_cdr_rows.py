"""A call record and its database row: every field survives the round trip, in the row's types."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.cdr import CALL_RECORD_COLUMNS
from gateway.cdr_store import record_to_row, row_to_record
from tests.billing.records import call

ANSWER = datetime(2026, 10, 5, 2, 0, 7, 250_000, tzinfo=UTC)


@pytest.mark.parametrize("answer", [ANSWER, None], ids=["answered", "unanswered"])
@pytest.mark.parametrize("ingress", [True, False], ids=["ingress", "transit"])
def test_a_record_and_its_row_round_trip(answer: datetime | None, ingress: bool) -> None:
    record = call(answer, 61.5, ingress=ingress)
    row = record_to_row(record)
    values = dict(zip(CALL_RECORD_COLUMNS, row, strict=True))
    assert values["start"] == record.start.isoformat() and values["end"] == record.end.isoformat()
    assert values["answer"] == (None if answer is None else "2026-10-05T02:00:07.250000+00:00")
    assert values["ingress"] == int(ingress) and type(values["ingress"]) is int
    assert values["session_id"] == record.session_id and values["sip_status"] == record.sip_status
    assert row_to_record(row) == record
