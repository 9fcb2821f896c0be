"""Call records: what one leg of one call did, keyed by (Session-ID, leg).

A B2BUA call has two legs on this gateway: "a" faces the caller, "b" faces
the callee that answered (or the last one tried). Only the gateway where the
call entered (``ingress``) rates it; the others keep their legs for audit.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import UTC, datetime
from typing import Literal

Disposition = Literal["answered", "no_answer", "busy", "failed", "cancelled", "rejected"]
Category = Literal["voice", "video", "bridged", "iptv"]

DISPOSITIONS: tuple[Disposition, ...] = ("answered", "no_answer", "busy", "failed", "cancelled", "rejected")


@dataclass(frozen=True)
class CallRecord:
    session_id: str
    leg: str
    node: str
    tenant: str
    site: str
    caller: str
    callee: str
    account: str
    ingress: bool
    category: Category
    start: datetime
    answer: datetime | None
    end: datetime
    disposition: Disposition
    sip_status: int
    codec: str
    packets_in: int
    packets_out: int
    bytes_in: int
    bytes_out: int
    call_id: str
    ended_by: Literal["caller", "callee", "system"]

    def __post_init__(self) -> None:
        for instant in (self.start, self.answer, self.end):
            if instant is not None and instant.utcoffset() != UTC.utcoffset(None):
                raise ValueError("call record times must be aware datetimes in UTC")

    @property
    def billable_seconds(self) -> float:
        """Seconds from answer to end (0 for unanswered calls)."""
        if self.answer is None:
            return 0.0
        return max(0.0, (self.end - self.answer).total_seconds())

    @property
    def key(self) -> tuple[str, str]:
        return (self.session_id, self.leg)


CALL_RECORD_COLUMNS: tuple[str, ...] = tuple(f.name for f in fields(CallRecord))


def utc_from_timestamp(ts: float) -> datetime:
    return datetime.fromtimestamp(ts, UTC)
