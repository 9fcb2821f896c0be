"""The browser sessions' SIP user agent core, driven with bytes and a fake clock.

The far end's answers are built with the gateway's own message layer and
checked with its own digest authenticator, the pieces the SIP service uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gateway.sip.digest import AuthAccepted, DigestAuthenticator
from gateway.sip.message import Request, Response, make_response
from gateway.sip.parser import parse_message
from gateway.sip.registrar import credentials_of
from gateway.sip.transaction import TimerConfig
from gateway.users import ha1
from gateway.webrtc.sip_ua import (
    Account,
    AgentSettings,
    CallAnswered,
    CallEnded,
    CallFailed,
    CallRinging,
    Event,
    IncomingCallReceived,
    OfferReceived,
    RegistrationFailed,
    RegistrationSucceeded,
    Unregistered,
    UserAgent,
)

SERVICE = ("127.0.0.1", 5060)
SECRET = b"0123456789abcdef0123456789abcdef"
ALICE = Account(
    "alice",
    "acme",
    {"MD5": ha1("MD5", "alice", "acme", "pw-123456"), "SHA-256": ha1("SHA-256", "alice", "acme", "pw-123456")},
)
SDP = b"v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\nm=audio 4000 RTP/AVP 0\r\n"


@dataclass
class Harness:
    ua: UserAgent = field(
        default_factory=lambda: UserAgent(AgentSettings("127.0.0.1:5070", SERVICE, timers=TimerConfig(0.5, 4.0, 5.0)))
    )
    auth: DigestAuthenticator = field(
        default_factory=lambda: DigestAuthenticator(SECRET, algorithms=("SHA-256", "MD5"))
    )
    now: float = 100.0

    def sent(self) -> list[Request | Response]:
        out = []
        for data, destination in self.ua.take_outgoing():
            assert destination == SERVICE
            out.append(parse_message(data))
        return out

    def deliver(self, message: Request | Response) -> list[Event]:
        return self.ua.receive(bytes(message), SERVICE, self.now)

    def advance(self, seconds: float) -> list[Event]:
        self.now += seconds
        return self.ua.handle_timers(self.now)

    def challenge(self, request: Request, status: int = 401) -> Response:
        header = "Proxy-Authenticate" if status == 407 else "WWW-Authenticate"
        values = self.auth.challenges("acme", self.now)
        return make_response(request, status, to_tag="srv", extra=[(header, v) for v in values])

    def check(self, request: Request, header: str = "Authorization") -> None:
        creds = credentials_of(request, header)
        assert creds is not None
        result = self.auth.verify(creds, request.method, "acme", ALICE.ha1s[creds.algorithm], self.now)
        assert result == AuthAccepted("alice"), result


def registered(h: Harness, binding: str = "b1") -> Request:
    h.ua.register(binding, ALICE, "wb-1", h.now)
    (first,) = h.sent()
    assert isinstance(first, Request) and "Authorization" not in first.headers
    h.deliver(h.challenge(first))
    (second,) = h.sent()
    assert isinstance(second, Request)
    h.check(second)
    assert second.call_id == first.call_id and second.cseq.number == first.cseq.number + 1
    ok = make_response(second, 200, to_tag="srv", extra=[("Contact", "<sip:wb-1@127.0.0.1:5070>;expires=120")])
    assert h.deliver(ok) == [RegistrationSucceeded("b1", 120)]
    return second


def test_registration_answers_the_challenge_from_ha1_and_refreshes_at_half_time() -> None:
    h = Harness()
    registered(h)
    assert h.advance(59.9) == [] and h.sent() == []
    h.advance(0.1)
    (refresh,) = h.sent()
    assert isinstance(refresh, Request)
    h.check(refresh)  # the cached challenge, next nonce count: no extra round trip
    assert credentials_of(refresh) is not None and credentials_of(refresh).nc == "00000002"  # type: ignore[union-attr]


def test_a_wrong_ha1_fails_once_and_retries_later() -> None:
    h = Harness()
    wrong = Account("alice", "acme", {"SHA-256": "0" * 64})
    h.ua.register("b1", wrong, "wb-1", h.now)
    (first,) = h.sent()
    h.deliver(h.challenge(first))  # type: ignore[arg-type]
    (second,) = h.sent()
    assert h.deliver(h.challenge(second)) == [RegistrationFailed("b1", 401)]  # type: ignore[arg-type]
    assert h.advance(29.9) == [] and h.sent() == []
    h.advance(0.1)
    assert len(h.sent()) == 1


def test_unregistering_sends_expires_zero() -> None:
    h = Harness()
    registered(h)
    h.ua.unregister("b1", h.now)
    (bye,) = h.sent()
    assert isinstance(bye, Request) and bye.headers.get("Expires") == "0"
    assert h.deliver(make_response(bye, 200, to_tag="srv")) == [Unregistered("b1")]
    h.advance(3600)
    assert h.sent() == [] and h.ua.next_deadline() is None


def test_an_incoming_call_rings_and_the_callers_cancel_ends_it() -> None:
    h = Harness()
    registered(h)
    invite = parse_message(
        b"INVITE sip:wb-1@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKin1\r\n"
        b'From: "Bob" <sip:bob@acme>;tag=b1\r\nTo: <sip:alice@acme>\r\nCall-ID: in-1\r\nCSeq: 1 INVITE\r\n'
        b"Contact: <sip:bob@127.0.0.1:5060>\r\nSession-ID: 0123456789abcdef0123456789abcdef;remote=00000000000000000000000000000000\r\n"
        b"Content-Type: application/sdp\r\nContent-Length: " + str(len(SDP)).encode() + b"\r\n\r\n" + SDP
    )
    (event,) = h.deliver(invite)
    assert isinstance(event, IncomingCallReceived)
    assert (event.caller, event.caller_display, event.binding, event.sdp) == ("bob@acme", "Bob", "b1", SDP)
    assert event.session_id == "0123456789abcdef0123456789abcdef"
    assert h.sent() == []  # a 100 Trying only if the browser does not ring within the wait
    h.ua.ring(event.call, h.now)
    (ringing,) = h.sent()
    assert isinstance(ringing, Response) and ringing.status == 180 and ringing.to.tag
    cancel = parse_message(
        b"CANCEL sip:wb-1@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKin1\r\n"
        b'From: "Bob" <sip:bob@acme>;tag=b1\r\nTo: <sip:alice@acme>\r\nCall-ID: in-1\r\nCSeq: 1 CANCEL\r\n'
        b"Content-Length: 0\r\n\r\n"
    )
    assert h.deliver(cancel) == [CallEnded(event.call, "remote", 487)]
    assert sorted(r.status for r in h.sent()) == [200, 487]  # type: ignore[union-attr]


def test_an_unknown_contact_gets_404() -> None:
    h = Harness()
    invite = parse_message(
        b"INVITE sip:wb-nobody@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
        b"From: <sip:bob@acme>;tag=b1\r\nTo: <sip:x@acme>\r\nCall-ID: in-2\r\nCSeq: 1 INVITE\r\nContent-Length: 0\r\n\r\n"
    )
    assert h.deliver(invite) == []
    # Answered before anything left: the 404 alone, no 100 Trying (RFC 3261 section 17.2.1).
    assert [r.status for r in h.sent()] == [404]  # type: ignore[union-attr]


def outgoing_invite(h: Harness) -> Request:
    h.ua.invite("c1", "b1", "bob", SDP, h.now)
    (invite,) = h.sent()
    assert isinstance(invite, Request) and invite.method == "INVITE"
    h.check(invite, "Proxy-Authorization")  # the registration's challenge, reused: no 407 round trip
    assert str(invite.uri) == "sip:bob@acme" and invite.headers.get("Session-ID")
    return invite


def test_an_answered_call_is_acked_again_on_a_repeated_200_and_ends_on_bye() -> None:
    h = Harness()
    registered(h)
    invite = outgoing_invite(h)
    assert h.deliver(make_response(invite, 180, to_tag="callee")) == [CallRinging("c1", 180)]
    ok = make_response(invite, 200, to_tag="callee", extra=[("Contact", "<sip:bob@127.0.0.1:5060>")], body=SDP)
    assert h.deliver(ok) == [CallAnswered("c1", SDP)]
    (ack,) = h.sent()
    assert isinstance(ack, Request) and ack.method == "ACK" and str(ack.uri) == "sip:bob@127.0.0.1:5060"
    assert h.deliver(ok) == []  # the 2xx again: our ACK was lost
    assert [m.method for m in h.sent()] == ["ACK"]  # type: ignore[union-attr]
    bye = parse_message(
        b"BYE sip:wb-1@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKbye\r\n"
        b"From: <sip:bob@acme>;tag=callee\r\nTo: <sip:alice@acme>;tag=" + (invite.from_.tag or "").encode() + b"\r\n"
        b"Call-ID: " + invite.call_id.encode() + b"\r\nCSeq: 2 BYE\r\nContent-Length: 0\r\n\r\n"
    )
    assert h.deliver(bye) == [CallEnded("c1", "remote", 200)]
    assert [r.status for r in h.sent()] == [200]  # type: ignore[union-attr]


def test_a_reinvite_is_an_offer_for_the_application_to_answer() -> None:
    h = Harness()
    registered(h)
    invite = outgoing_invite(h)
    h.deliver(make_response(invite, 200, to_tag="callee", extra=[("Contact", "<sip:bob@127.0.0.1:5060>")], body=SDP))
    h.sent()
    hold = SDP.replace(b"m=audio 4000 RTP/AVP 0\r\n", b"m=audio 4000 RTP/AVP 0\r\na=sendonly\r\n")
    reinvite = parse_message(
        b"INVITE sip:wb-1@127.0.0.1:5070 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKre\r\n"
        b"From: <sip:bob@acme>;tag=callee\r\nTo: <sip:alice@acme>;tag=" + (invite.from_.tag or "").encode() + b"\r\n"
        b"Call-ID: " + invite.call_id.encode() + b"\r\nCSeq: 5 INVITE\r\nContent-Type: application/sdp\r\n"
        b"Content-Length: " + str(len(hold)).encode() + b"\r\n\r\n" + hold
    )
    assert h.deliver(reinvite) == [OfferReceived("c1", hold)]
    h.ua.answer_offer("c1", SDP, h.now)
    # The application answered at once: the 200 alone, no 100 Trying queued before it.
    assert [(r.status, r.body) for r in h.sent()] == [(200, SDP)]  # type: ignore[union-attr]


def test_hanging_up_before_any_answer_cancels_once_the_far_end_has_spoken() -> None:
    h = Harness()
    registered(h)
    invite = outgoing_invite(h)
    assert h.ua.hangup("c1", h.now) == [CallEnded("c1", "local", 487)]
    assert h.sent() == []  # RFC 3261 section 9.1: no CANCEL before a provisional response
    h.deliver(make_response(invite, 100))
    (cancel,) = h.sent()
    assert isinstance(cancel, Request) and cancel.method == "CANCEL" and cancel.top_via.branch == invite.top_via.branch
    assert h.deliver(make_response(invite, 487, to_tag="callee")) == []
    assert [m.method for m in h.sent()] == ["ACK"]  # type: ignore[union-attr]
    assert h.ua.calls == 0


def test_an_invite_nobody_answers_fails_after_timer_b() -> None:
    h = Harness()
    registered(h)
    outgoing_invite(h)
    events: list[Event] = []
    for _ in range(80):
        events += h.advance(0.5)
    assert events == [CallFailed("c1", 408, "Request Timeout")]
    assert len(h.sent()) == 6  # retransmissions at T1 doubling, until timer B (64 * T1)


def test_a_stale_nonce_is_answered_again_without_failing() -> None:
    h = Harness()
    registered(h)
    invite = outgoing_invite(h)
    h.now += 1000  # the nonce aged past the authenticator's lifetime
    values = h.auth.challenges("acme", h.now, stale=True)
    h.deliver(make_response(invite, 407, to_tag="srv", extra=[("Proxy-Authenticate", v) for v in values]))
    sent = h.sent()
    retry = sent[-1]
    assert isinstance(retry, Request) and retry.method == "INVITE" and retry.cseq.number == invite.cseq.number + 1
    h.check(retry, "Proxy-Authorization")
