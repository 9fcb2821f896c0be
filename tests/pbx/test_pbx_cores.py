"""Correlation, presence, dialog-info, security and click-to-call cores, on events recorded from Asterisk 22."""

from __future__ import annotations

import hashlib
import logging
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

import pytest

from gateway.clock import WallAnchor
from gateway.configschema import ConfigError, load_section
from gateway.pbx.ami_events import ChannelInfo, PbxEvent, SecurityEventReported, parse_event
from gateway.pbx.calls import CallCorrelator, PbxCallEnded, TrunkBinding
from gateway.pbx.click_to_call import ClickToCall, InvalidCallRequest, OriginatePlan, originate_fields, parse_request
from gateway.pbx.config import PbxConfig
from gateway.pbx.dialog_info import NAMESPACE, dialog_info_body
from gateway.pbx.presence import ExtensionState, PresenceBook, state_from_device, state_from_status
from gateway.pbx.records import to_call_record
from gateway.pbx.security import log_security_event, parse_address, security_record
from tests.pbx.test_ami_core import SESSION, fixture, messages

TRUNK = TrunkBinding("seabridge", "acme/hq-trunk", "acme", "beijing")


def events(name: str) -> list[PbxEvent]:
    return [parse_event(m) for m in messages(fixture(name)) if m.event]


def correlate(evs: list[PbxEvent], correlator: CallCorrelator | None = None) -> list[PbxCallEnded]:
    c = correlator or CallCorrelator([TRUNK])
    out: list[PbxCallEnded] = []
    for i, e in enumerate(evs):
        out += c.on_event(e, 100.0 + i * 0.1)
    return out


# --- correlation ------------------------------------------------------------------------------


def test_site_call_into_pbx_is_one_record_with_the_gateway_session() -> None:
    evs = events("ami_trunk_call.bin")
    assert len(evs) > 8  # many events describe the call...
    (ended,) = correlate(evs)  # ...one record comes out
    r = ended.record
    assert r.session_id == SESSION and r.direction == "into_pbx" and r.trunk == "seabridge"
    assert r.account == "" and r.callee == "600" and r.caller == "seabridge"
    assert r.disposition == "answered" and r.answered is not None and r.billable_seconds > 0


def test_hq_call_to_site_is_charged_to_the_trunk_account() -> None:
    evs = events("ami_hq_to_site.bin")
    (ended,) = correlate(evs)
    r = ended.record
    assert r.direction == "from_pbx" and r.account == "acme/hq-trunk" and r.tenant == "acme"
    assert r.callee == "alice" and r.disposition == "answered"
    # The id Asterisk put on the INVITE to the gateway (minted by the dialplan) is the record's.
    chans = [getattr(e, "channel", None) for e in evs]
    minted = {c.variable("SEABRIDGE_SESSION_ID") for c in chans if isinstance(c, ChannelInfo)} - {""}
    assert minted == {r.session_id}


def test_calls_among_hq_phones_are_not_the_gateways() -> None:
    c = CallCorrelator([TRUNK])
    assert correlate(events("ami_originate.bin"), c) == [] and c.open_calls == 0


def test_replayed_and_interleaved_events_still_give_one_record_per_call() -> None:
    a, b = events("ami_trunk_call.bin"), events("ami_hq_to_site.bin")
    interleaved = [e for pair in zip(a, b[: len(a)], strict=True) for e in pair] + b[len(a) :]
    c = CallCorrelator([TRUNK])
    first = correlate(interleaved, c)
    again = correlate(a + b, c)  # the same events a second time (a resync replay)
    assert sorted(x.record.direction for x in first) == ["from_pbx", "into_pbx"] and again == []


def test_resync_ends_calls_whose_hangup_was_missed() -> None:
    evs = events("ami_trunk_call.bin")
    cut = next(i for i, e in enumerate(evs) if type(e).__name__ == "ChannelHungUp")
    c = CallCorrelator([TRUNK])
    assert correlate(evs[:cut], c) == [] and c.open_calls == 1
    (ended,) = c.resync([], 500.0)  # after a reconnect Asterisk has no channel left
    assert ended.record.incomplete and ended.record.ended == 500.0 and ended.record.session_id == SESSION
    assert correlate(evs[cut:], c) == []  # the late hang-up makes no second record


def test_resync_adopts_calls_that_started_while_away() -> None:
    c = CallCorrelator([TRUNK])
    chan = ChannelInfo(
        "PJSIP/seabridge-0000000a", "17.10", "17.10", 6, "seabridge", "", "", "", "from-seabridge", "2001", ""
    )
    assert c.resync([chan], 10.0) == [] and c.open_calls == 1
    (ended,) = c.resync([], 20.0)
    assert ended.record.incomplete and ended.record.direction == "into_pbx"
    assert ended.record.session_id == hashlib.md5(b"17.10").hexdigest()  # as the dialplan mints it


def test_pbx_record_is_an_unrated_cdr_leg() -> None:
    (ended,) = correlate(events("ami_hq_to_site.bin"))
    anchor = WallAnchor(100.0, datetime(2026, 11, 26, 8, 0, tzinfo=UTC).timestamp())
    cdr = to_call_record(ended.record, anchor, "hq-gw")
    assert (cdr.leg, cdr.ingress, cdr.account, cdr.node) == ("pbx", False, "acme/hq-trunk", "hq-gw")
    assert cdr.start >= datetime(2026, 11, 26, 8, 0, tzinfo=UTC) and cdr.answer is not None
    assert cdr.key == (ended.record.session_id, "pbx") and cdr.sip_status == 200


# --- presence -------------------------------------------------------------------------------


def test_presence_from_recorded_extension_states() -> None:
    book = PresenceBook(["hq"])
    seen: list[tuple[str, str]] = []
    for i, e in enumerate(events("ami_originate.bin")):
        if type(e).__name__ == "ExtensionStateChanged":
            change = book.on_extension_status(e.exten, e.context, e.hint, e.status, float(i))  # type: ignore[union-attr]
            if change:
                seen.append((change.presence.exten, change.presence.state.value))
    assert ("2002", "ringing") in seen and ("2002", "busy") in seen and seen[-1][1] == "idle"
    assert [p.state for p in book.snapshot()] == [ExtensionState.IDLE, ExtensionState.IDLE]


def test_presence_states_devices_and_disconnect() -> None:
    assert [state_from_status(s) for s in (0, 1, 2, 4, 8, 9, 16, -1)] == [
        ExtensionState.IDLE,
        ExtensionState.BUSY,
        ExtensionState.BUSY,
        ExtensionState.UNAVAILABLE,
        ExtensionState.RINGING,
        ExtensionState.BUSY,
        ExtensionState.BUSY,
        ExtensionState.UNKNOWN,
    ]
    assert state_from_device("RINGING") is ExtensionState.RINGING and state_from_device("x") is ExtensionState.UNKNOWN
    book = PresenceBook(["hq"])
    assert book.on_extension_status("2001", "other", "PJSIP/2001", 0, 1.0) is None  # not a published context
    first = book.on_extension_status("2001", "hq", "PJSIP/2001", 0, 1.0)
    assert first is not None and first.presence.version == 1
    assert book.on_extension_status("2001", "hq", "PJSIP/2001", 0, 2.0) is None  # no change, no event
    ring = book.on_device_state("PJSIP/2001", "RINGING", 3.0)
    assert ring is not None and ring.previous is ExtensionState.IDLE and ring.presence.version == 2
    (lost,) = book.on_disconnected(4.0)
    assert lost.presence.state is ExtensionState.UNKNOWN and book.get("2001") == lost.presence


def test_dialog_info_bodies() -> None:
    ns = {"d": NAMESPACE}
    ringing = ET.fromstring(dialog_info_body("sip:2001@hq.acme", ExtensionState.RINGING, 3))
    assert ringing.attrib == {"version": "3", "state": "full", "entity": "sip:2001@hq.acme"}
    dialog = ringing.find("d:dialog", ns)
    assert dialog is not None and dialog.attrib == {"id": "2001", "direction": "recipient"}
    assert ringing.findtext("d:dialog/d:state", namespaces=ns) == "early"
    busy = ET.fromstring(dialog_info_body("sip:2001@hq.acme", ExtensionState.BUSY, 4))
    assert busy.findtext("d:dialog/d:state", namespaces=ns) == "confirmed"
    idle = ET.fromstring(dialog_info_body("sip:2001@hq.acme", ExtensionState.IDLE, 5))
    assert idle.find("d:dialog", ns) is None and idle.attrib["state"] == "full"
    odd = dialog_info_body('sip:a"<&>@hq', ExtensionState.IDLE, 0)
    assert ET.fromstring(odd).attrib["entity"] == 'sip:a"<&>@hq'  # escaped, still well-formed
    with pytest.raises(ValueError):
        dialog_info_body("sip:x@y", ExtensionState.IDLE, -1)


# --- security -------------------------------------------------------------------------------


def test_security_events_become_structured_log_records(caplog: pytest.LogCaptureFixture) -> None:
    evs = [e for e in events("ami_security.bin") if isinstance(e, SecurityEventReported)]
    records = [security_record(e) for e in evs]
    failed = [(r.event, r.account, r.service) for r in records if r.failed]
    assert failed == [
        ("ChallengeResponseFailed", "1001", "PJSIP"),
        ("InvalidAccountID", "9999", "PJSIP"),
        ("InvalidAccountID", "9999", "PJSIP"),
        ("ChallengeResponseFailed", "", "PJSIP"),  # Asterisk names no account here: "<unknown>"
        ("InvalidPassword", "seabridge-gw", "AMI"),
    ]
    logger = logging.getLogger("test.security")
    with caplog.at_level(logging.DEBUG, logger="test.security"):
        for r in records:
            log_security_event(logger, r)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 5 and warnings[0].getMessage() == "PBX refused ChallengeResponseFailed"
    w = warnings[0].__dict__
    assert w["origin"] == "pbx" and w["remote_ip"] == "127.0.0.1" and w["source"].startswith("127.0.0.1:")
    assert w["transport"] == "UDP" and w["account"] == "1001"
    assert parse_address("IPV6/TCP/::1/5038") is not None and parse_address("junk") is None


# --- click-to-call and config -----------------------------------------------------------------


def test_click_to_call_requests_and_originate_fields() -> None:
    assert parse_request({"from": "2001", "to": "alice@acme"}, "acme") == ClickToCall("2001", "alice")
    assert parse_request({"from": "2001", "to": "+243991234567"}, "acme").to == "+243991234567"
    for bad in (
        {"from": "2001"},
        {"from": "20 01", "to": "alice"},
        {"from": "2001", "to": "alice@globex"},  # another tenant's user
        {"from": "2001", "to": "alice&PJSIP/9999"},  # a second dial target
        {"from": "2001", "to": "alice\r\nAction: Command"},
        ["2001", "alice"],
    ):
        with pytest.raises(InvalidCallRequest):
            parse_request(bad, "acme")
    plan = OriginatePlan("hq", "8", 30, "SEABRIDGE_SESSION_ID")
    fields = dict(originate_fields(ClickToCall("2001", "alice"), plan, SESSION))
    assert fields["Channel"] == "PJSIP/2001" and fields["Exten"] == "8alice" and fields["Timeout"] == "30000"
    assert fields["Variable"] == f"__SEABRIDGE_SESSION_ID={SESSION}" and fields["CallerID"] == '"2001" <2001>'
    with pytest.raises(InvalidCallRequest):
        originate_fields(ClickToCall("2001", "alice"), plan, "not-a-session")


def test_pbx_config_section() -> None:
    cfg = load_section(PbxConfig, {"enabled": True, "tenant": "acme", "trunk_account": "acme/hq"}, "pbx")
    assert cfg.ami_port == 5038 and cfg.ami_secret == "" and cfg.presence_contexts == ("hq",)
    with pytest.raises(ConfigError, match="pbx.trunk_account"):
        load_section(PbxConfig, {"enabled": True, "tenant": "acme"}, "pbx")
    with pytest.raises(ConfigError, match="pbx.site_dial_prefix"):
        load_section(PbxConfig, {"site_dial_prefix": "8,n"}, "pbx")
    with pytest.raises(ConfigError, match="pbx.hq_context"):
        load_section(PbxConfig, {"hq_context": "hq\nexten"}, "pbx")
