"""The AMI cores on byte streams recorded from Asterisk 22 (tests/pbx/fixtures), with a fake clock."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.pbx.ami_events import (
    AsteriskBooted,
    AsteriskShutDown,
    ChannelCreated,
    ChannelHungUp,
    DialStarted,
    ExtensionStateChanged,
    OriginateFinished,
    SecurityEventReported,
    parse_event,
)
from gateway.pbx.ami_frame import AmiMessage, AmiParser, Banner, encode_action, parse_message
from gateway.pbx.ami_session import (
    ActionCompleted,
    ActionFailed,
    AmiSession,
    ConnectionTimedOut,
    LoggedIn,
    LoginRefused,
    SessionSettings,
)
from gateway.pbx.backoff import Backoff
from gateway.pbx.errors import AmiNotConnected, AmiProtocolError

FIXTURES = Path(__file__).with_name("fixtures")
SESSION = "4f6b0c2a9d8e4b1c8a7f6e5d4c3b2a10"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def messages(data: bytes, banner: bool = False) -> list[AmiMessage]:
    parser = AmiParser()
    parser.receive_data((b"" if banner else b"Asterisk Call Manager/11.0.0\r\n") + data)
    out: list[AmiMessage] = []
    while (item := parser.next_message()) is not None:
        if isinstance(item, AmiMessage):
            out.append(item)
    return out


# --- framing ------------------------------------------------------------------------------------


def test_login_stream_banner_and_messages() -> None:
    parser = AmiParser()
    parser.receive_data(fixture("ami_login.bin"))
    assert parser.next_message() == Banner("11.0.0")
    challenge = parser.next_message()
    assert isinstance(challenge, AmiMessage)
    assert challenge.response == "Success" and challenge.action_id == "1"
    assert challenge.get("challenge").isdigit()  # keys compare without case
    rest = []
    while (m := parser.next_message()) is not None:
        assert isinstance(m, AmiMessage)
        rest.append(m)
    assert [m.get("Message") or m.event for m in rest] == ["Authentication accepted", "FullyBooted", "SuccessfulAuth"]
    assert parser.next_message() is None


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(min_value=1, max_value=400), min_size=1, max_size=60))
def test_any_chunking_gives_the_same_messages(cuts: list[int]) -> None:
    data = b"Asterisk Call Manager/11.0.0\r\n" + fixture("ami_originate.bin")
    whole = messages(data, banner=True)
    parser = AmiParser()
    got: list[AmiMessage] = []
    pos = 0
    for size in [*cuts, len(data)]:
        parser.receive_data(data[pos : pos + size])
        pos += size
        while (item := parser.next_message()) is not None:
            if isinstance(item, AmiMessage):
                got.append(item)
    assert got == whole and len(whole) > 30


def test_repeated_keys_and_channel_variables() -> None:
    hq = messages(fixture("ami_hq_to_site.bin"))
    dial = next(m for m in hq if m.event == "DialBegin" and m.get("DestChannel").startswith("PJSIP/seabridge-"))
    sid = dial.variables()["SEABRIDGE_SESSION_ID"]
    assert len(sid) == 32 and dial.variables("Dest") == {"SEABRIDGE_SESSION_ID": sid}
    orig = next(m for m in messages(fixture("ami_originate.bin")) if m.event == "OriginateResponse")
    # OriginateResponse names the channel in the key: ChanVariable(PJSIP/2001-00000001): NAME=value
    assert "SEABRIDGE_SESSION_ID" in orig.variables()


def test_utf8_names_survive_and_bad_bytes_are_replaced() -> None:
    m = parse_message("Event: Newchannel\r\nCallerIDName: 王小明\r\nExten: 2001".encode() + b"\r\nX: \xff")
    assert m.get("CallerIDName") == "王小明" and m.get("X") == "\ufffd"


def test_not_ami_is_refused() -> None:
    parser = AmiParser()
    parser.receive_data(b"HTTP/1.1 400 Bad Request\r\n")
    with pytest.raises(AmiProtocolError):
        parser.next_message()
    endless = AmiParser()
    endless.receive_data(b"Asterisk Call Manager/11.0.0\r\n" + b"Key: value\r\n" * 30000)
    endless.next_message()
    with pytest.raises(AmiProtocolError):
        endless.next_message()


def test_actions_refuse_injected_lines() -> None:
    assert encode_action("Ping", "sb-1") == b"Action: Ping\r\nActionID: sb-1\r\n\r\n"
    with pytest.raises(AmiProtocolError):
        encode_action("Originate", "sb-2", [("Exten", "2001\r\nAction: Command\r\nCommand: core stop now")])
    with pytest.raises(AmiProtocolError):
        encode_action("Originate", "sb-2", [("Bad: key", "x")])


# --- typed events -------------------------------------------------------------------------------


def test_trunk_call_events_are_typed() -> None:
    events = [parse_event(m) for m in messages(fixture("ami_trunk_call.bin")) if m.event]
    created = [e for e in events if isinstance(e, ChannelCreated)]
    assert len(created) == 1
    chan = created[0].channel
    assert chan.endpoint == "seabridge" and chan.exten == "600" and chan.uniqueid == chan.linkedid
    hangup = next(e for e in events if isinstance(e, ChannelHungUp))
    assert hangup.channel.variable("SEABRIDGE_SESSION_ID") == SESSION
    # As recorded: Asterisk 22 reports the caller's BYE on an Echo() channel with cause 0.
    assert (hangup.cause, hangup.cause_text) == (0, "Unknown")


def test_originate_events_are_typed() -> None:
    events = [parse_event(m) for m in messages(fixture("ami_originate.bin")) if m.event]
    finished = [e for e in events if isinstance(e, OriginateFinished)]
    assert len(finished) == 1 and finished[0].success and finished[0].reason == 4 and finished[0].action_id == "3"
    dials = [e for e in events if isinstance(e, DialStarted)]
    assert dials[0].caller is None and dials[0].callee.channel.startswith("PJSIP/2001-")
    assert dials[1].caller is not None and dials[1].callee.channel.startswith("PJSIP/2002-")
    states = [(e.exten, e.status_text) for e in events if isinstance(e, ExtensionStateChanged)]
    assert ("2002", "Ringing") in states and ("2002", "InUse") in states and states[-1][1] == "Idle"


def test_security_and_system_events_are_typed() -> None:
    events = [parse_event(m) for m in messages(fixture("ami_security.bin")) if m.event]
    names = [(e.name, e.account_id) for e in events if isinstance(e, SecurityEventReported)]
    assert ("ChallengeResponseFailed", "1001") in names
    assert ("InvalidAccountID", "9999") in names
    assert ("InvalidPassword", "seabridge-gw") in names
    login = [parse_event(m) for m in messages(fixture("ami_login.bin"), banner=True) if m.event]
    assert isinstance(login[0], AsteriskBooted)
    shutdown = [parse_event(m) for m in messages(fixture("ami_shutdown.bin")) if m.event]
    assert shutdown and isinstance(shutdown[0], AsteriskShutDown) and not shutdown[0].restarting


# --- session ------------------------------------------------------------------------------------


def drain(session: AmiSession) -> list[object]:
    out = []
    while (e := session.next_event()) is not None:
        out.append(e)
    return out


def sent(session: AmiSession) -> list[AmiMessage]:
    data = session.data_to_send()
    return [parse_message(chunk) for chunk in data.split(b"\r\n\r\n") if chunk]


def logged_in(now: float = 0.0, **kw: float) -> AmiSession:
    s = AmiSession("seabridge-gw", "s3cret", now, SessionSettings(**kw))
    s.receive_data(b"Asterisk Call Manager/11.0.0\r\n", now)
    (challenge,) = sent(s)
    assert challenge.get("Action") == "Challenge" and challenge.get("AuthType") == "MD5"
    s.receive_data(
        f"Response: Success\r\nActionID: {challenge.action_id}\r\nChallenge: 721755976\r\n\r\n".encode(), now
    )
    (login,) = sent(s)
    assert login.get("Key") == hashlib.md5(b"721755976s3cret").hexdigest()
    assert not login.has("Secret") and login.get("Events") == "system,call,security"
    s.receive_data(
        f"Response: Success\r\nActionID: {login.action_id}\r\nMessage: Authentication accepted\r\n\r\n".encode(), now
    )
    assert drain(s) == [LoggedIn("11.0.0")] and s.ready
    return s


def test_login_with_md5_challenge() -> None:
    logged_in()


def test_login_refused() -> None:
    s = AmiSession("u", "wrong", 0.0)
    s.receive_data(b"Asterisk Call Manager/11.0.0\r\n", 0.0)
    (challenge,) = sent(s)
    s.receive_data(f"Response: Success\r\nActionID: {challenge.action_id}\r\nChallenge: 1\r\n\r\n".encode(), 0.1)
    (login,) = sent(s)
    s.receive_data(
        f"Response: Error\r\nActionID: {login.action_id}\r\nMessage: Authentication failed\r\n\r\n".encode(), 0.2
    )
    assert drain(s) == [LoginRefused("Authentication failed")] and s.closed
    with pytest.raises(AmiNotConnected):
        s.send_action("Ping", (), 0.3)


def test_login_times_out_on_a_silent_peer() -> None:
    s = AmiSession("u", "p", 100.0, SessionSettings(login_timeout=10))
    assert s.get_timer() == 110.0
    s.handle_timer(109.9)
    assert drain(s) == []
    s.handle_timer(110.0)
    assert drain(s) == [ConnectionTimedOut("login")] and s.get_timer() is None


def test_action_answer_and_event_list() -> None:
    s = logged_in()
    ping = s.send_action("Ping", (), 1.0)
    lst = s.send_action("ExtensionStateList", (), 1.0)
    assert [m.get("Action") for m in sent(s)] == ["Ping", "ExtensionStateList"]
    s.receive_data(f"Response: Success\r\nActionID: {ping}\r\nPing: Pong\r\n\r\n".encode(), 1.1)
    s.receive_data(
        f"Response: Success\r\nActionID: {lst}\r\nEventList: start\r\nMessage: will follow\r\n\r\n"
        f"Event: ExtensionStatus\r\nActionID: {lst}\r\nExten: 2001\r\nContext: hq\r\nHint: PJSIP/2001\r\n"
        f"Status: 0\r\nStatusText: Idle\r\n\r\n"
        f"Event: ExtensionStatus\r\nExten: 2002\r\nContext: hq\r\nHint: PJSIP/2002\r\nStatus: 8\r\n"
        f"StatusText: Ringing\r\n\r\n"
        f"Event: ExtensionStateListComplete\r\nActionID: {lst}\r\nEventList: Complete\r\nListItems: 1\r\n\r\n".encode(),
        1.2,
    )
    events = drain(s)
    assert isinstance(events[0], ActionCompleted) and events[0].response.get("Ping") == "Pong"
    # A live event in the middle of the list is an event, not part of the list.
    assert isinstance(events[1], ExtensionStateChanged) and events[1].exten == "2002"
    assert isinstance(events[2], ActionCompleted) and [m.get("Exten") for m in events[2].events] == ["2001"]


def test_action_error_and_timeout() -> None:
    s = logged_in(action_timeout=5)
    bad = s.send_action("Originate", [("Channel", "PJSIP/none")], 2.0)
    slow = s.send_action("CoreShowChannels", (), 3.0)
    s.receive_data(f"Response: Error\r\nActionID: {bad}\r\nMessage: Originate failed\r\n\r\n".encode(), 2.5)
    assert drain(s) == [ActionFailed(bad, "Originate", "Originate failed")]
    assert s.get_timer() == 8.0
    s.handle_timer(8.0)
    assert drain(s) == [ActionFailed(slow, "CoreShowChannels", "no answer from Asterisk in time")]


def test_keepalive_ping_and_dead_peer() -> None:
    s = logged_in(ping_interval=20, ping_timeout=10)
    sent(s)
    s.receive_data(b"Event: FullyBooted\r\nStatus: Fully Booted\r\n\r\n", 5.0)
    assert s.get_timer() == 25.0  # quiet for ping_interval after the last bytes
    s.handle_timer(25.0)
    (ping,) = sent(s)
    assert ping.get("Action") == "Ping" and s.get_timer() == 35.0
    s.receive_data(f"Response: Success\r\nActionID: {ping.action_id}\r\nPing: Pong\r\n\r\n".encode(), 26.0)
    assert s.get_timer() == 46.0
    s.handle_timer(46.0)
    sent(s)
    s.handle_timer(56.0)
    assert drain(s)[-1] == ConnectionTimedOut("ping") and s.closed


def test_originate_outcome_is_an_event_though_it_says_response() -> None:
    s = logged_in()
    a = s.send_action("Originate", [("Channel", "PJSIP/2001"), ("Async", "true")], 1.0)
    s.receive_data(
        f"Response: Success\r\nActionID: {a}\r\nMessage: Originate successfully queued\r\n\r\n".encode(), 1.1
    )
    recorded = next(m for m in messages(fixture("ami_originate.bin")) if m.event == "OriginateResponse")
    event = "".join(f"{k}: {a if k == 'ActionID' else v}\r\n" for k, v in recorded.fields) + "\r\n"
    s.receive_data(event.encode(), 3.0)
    completed, finished = drain(s)
    assert (
        isinstance(completed, ActionCompleted) and completed.response.get("Message") == "Originate successfully queued"
    )
    assert isinstance(finished, OriginateFinished) and finished.action_id == a and finished.success


def test_connection_lost_fails_pending_actions() -> None:
    s = logged_in()
    a = s.send_action("Originate", [("Channel", "PJSIP/2001")], 1.0)
    assert s.connection_lost() == [ActionFailed(a, "Originate", "AMI connection lost")]
    assert s.closed and s.get_timer() is None


def test_backoff_grows_caps_and_resets() -> None:
    b = Backoff(initial=0.5, maximum=8, factor=2, jitter=0.2)
    delays = [b.next_delay(0.5) for _ in range(7)]
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0, 8.0, 8.0]
    assert b.next_delay(0.0) == pytest.approx(6.4) and b.next_delay(0.999999) == pytest.approx(9.6, rel=1e-5)
    b.reset()
    assert b.next_delay(0.5) == 0.5
    with pytest.raises(ValueError):
        Backoff(initial=0)
