"""A PBX call record as the gateway's own ``CallRecord`` (leg ``pbx``), for the CDR store.

The record is never the rated one (``ingress=False``): a call that entered from the trunk is
rated by the gateway's own B2BUA record of the same Session-ID (charged to the trunk's account,
per DECISIONS.md), and a site user's call to HQ by the site gateway. The PBX leg is there to
match the PBX's view to the gateway's (same Session-ID, same account) and to name the HQ
extension involved; the store keeps one row per (Session-ID, leg, node) however often it is written.
"""

from __future__ import annotations

from gateway.cdr import CallRecord
from gateway.clock import WallAnchor
from gateway.pbx.calls import PbxCallRecord

PBX_LEG = "pbx"

# Q.850 cause -> the SIP status a caller would have seen (RFC 3398 section 7.2.4.1, abridged).
_SIP_STATUS = {16: 200, 17: 486, 18: 408, 19: 480, 21: 603, 1: 404, 3: 404, 27: 502, 34: 503, 38: 503, 127: 500}


def to_call_record(record: PbxCallRecord, anchor: WallAnchor, node: str) -> CallRecord:
    answered = record.answered is not None
    return CallRecord(
        session_id=record.session_id,
        leg=PBX_LEG,
        node=node,
        tenant=record.tenant,
        site=record.site,
        caller=record.caller,
        callee=record.callee,
        account=record.account,
        ingress=False,
        category="voice",
        start=anchor.utc(record.started),
        answer=anchor.utc(record.answered) if record.answered is not None else None,
        end=anchor.utc(record.ended),
        disposition=record.disposition,
        sip_status=200 if answered else _SIP_STATUS.get(record.hangup_cause, 0),
        codec="",
        packets_in=0,
        packets_out=0,
        bytes_in=0,
        bytes_out=0,
        call_id=record.linkedid,  # Asterisk's identity of the call, for looking it up in the PBX's own CDRs
        ended_by="system",
    )
