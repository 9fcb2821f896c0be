"""The browser phone's sans-I/O cores: tokens, digest from HA1, SDP plans, forwarding, keyframe gate, throttle."""

from __future__ import annotations

import hashlib

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.sip.digest import AuthAccepted, DigestAuthenticator
from gateway.sip.message import Headers, Request, make_response
from gateway.sip.registrar import credentials_of
from gateway.sip.uri import parse_uri
from gateway.users import ha1
from gateway.webrtc.call_media import browser_codecs
from gateway.webrtc.category import call_category
from gateway.webrtc.errors import SignallingError, TokenRejected
from gateway.webrtc.forwarding import KeyframeGate, StreamRewriter
from gateway.webrtc.signalling import (
    AcceptCall,
    Authenticate,
    PlaceCall,
    SendDigits,
    SetHold,
    end_reason,
    parse_client_message,
)
from gateway.webrtc.sip_auth import authorization, pick_challenge
from gateway.webrtc.sip_sdp import SdpRefused, answer_offer, build_offer, plan_from_answer
from gateway.webrtc.throttle import LoginThrottle
from gateway.webrtc.tokens import TokenIssuer
from media.rtp import RtpPacket

SECRET = b"0123456789abcdef0123456789abcdef"

# --- tokens ----------------------------------------------------------------------------------


def test_a_token_names_its_user_until_it_expires() -> None:
    issuer = TokenIssuer(SECRET, ttl=600)
    token, claims = issuer.issue("alice", "acme", now=1000.0)
    assert issuer.verify(token, 1599.0) == claims
    assert claims.address == "alice@acme" and claims.expires_at == 1600
    with pytest.raises(TokenRejected, match="expired"):
        issuer.verify(token, 1600.0)


def test_tampered_or_foreign_tokens_are_rejected() -> None:
    issuer = TokenIssuer(SECRET, ttl=600)
    token, _ = issuer.issue("alice", "acme", now=1000.0)
    version, payload, mac = token.split(".")
    other_payload = TokenIssuer(SECRET, ttl=10**6).issue("mallory", "acme", 1000.0)[0].split(".")[1]
    for bad in (
        f"{version}.{other_payload}.{mac}",  # someone else's payload under alice's MAC
        f"v2.{payload}.{mac}",
        TokenIssuer(b"another-secret-0123456789abcdef", 600).issue("alice", "acme", 1000.0)[0],
        "",
        "a.b",
    ):
        with pytest.raises(TokenRejected):
            issuer.verify(bad, 1001.0)


# --- digest from the stored HA1 ---------------------------------------------------------------


@pytest.mark.parametrize("algorithm", ["SHA-256", "MD5"])
def test_the_agents_credentials_pass_the_gateways_own_digest_check(algorithm: str) -> None:
    server = DigestAuthenticator(SECRET, algorithms=(algorithm,))
    request = Request(
        headers=Headers(
            (("Via", "SIP/2.0/UDP 127.0.0.1:5070;branch=z9hG4bK1"), ("Call-ID", "x"), ("CSeq", "1 REGISTER"))
        ),
        method="REGISTER",
        uri=parse_uri("sip:acme"),
    )
    challenge_values = server.challenges("acme", now=10.0)
    response = make_response(request, 401, extra=[("WWW-Authenticate", v) for v in challenge_values])
    ha1s = {"MD5": ha1("MD5", "alice", "acme", "pw-123456"), "SHA-256": ha1("SHA-256", "alice", "acme", "pw-123456")}
    challenge = pick_challenge(response, ha1s)
    assert challenge is not None and challenge.algorithm == algorithm
    for count in range(2):  # the same nonce again, with the next nonce count, is accepted too
        value = authorization(challenge, "alice", ha1s[algorithm], "REGISTER", "sip:acme")
        creds = credentials_of(Request(headers=Headers((("Authorization", value),)), method="REGISTER"))
        assert creds is not None and creds.nc == f"{count + 1:08x}"
        assert server.verify(creds, "REGISTER", "acme", ha1s[algorithm], 11.0) == AuthAccepted("alice")
        challenge = challenge.answered()


def test_a_challenge_we_hold_no_ha1_for_is_not_picked() -> None:
    server = DigestAuthenticator(SECRET, algorithms=("SHA-256",))
    request = Request(headers=Headers((("Call-ID", "x"), ("CSeq", "1 INVITE"))), method="INVITE")
    response = make_response(request, 407, extra=[("Proxy-Authenticate", v) for v in server.challenges("acme", 1.0)])
    assert pick_challenge(response, {"MD5": "0" * 32}) is None


# --- SDP for the SIP side ------------------------------------------------------------------------

BARESIP_OFFER = (
    b"v=0\r\no=- 1 2 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    b"m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    b"a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=sendrecv\r\n"
)


def test_a_phone_offering_g711_gets_g711_with_its_telephone_event() -> None:
    answer, plan = answer_offer(BARESIP_OFFER, "127.0.0.1", 30000, 30002)
    assert plan.audio.codec == "PCMU" and plan.audio.transcoded
    assert plan.audio.telephone_event == 101 and plan.audio.clock_rate == 8000
    assert plan.audio.remote == ("127.0.0.1", 40000) and plan.video is None
    assert b"m=audio 30000 RTP/AVP 0 101\r\n" in answer


def test_our_offer_answered_by_ourselves_forwards_opus_and_vp8() -> None:
    offer = build_offer("127.0.0.1", 30000, 30002)
    answer, callee = answer_offer(offer, "127.0.0.2", 31000, 31002)
    caller = plan_from_answer(answer)
    assert caller.audio.codec == callee.audio.codec == "opus" and not caller.audio.transcoded
    assert caller.audio.telephone_event == 110  # the 48 kHz one, matching Opus's clock
    assert caller.video is not None and callee.video is not None
    assert caller.video.remote == ("127.0.0.2", 31002) and callee.video.remote == ("127.0.0.1", 30002)


def test_video_is_refused_when_the_browser_sends_none_and_audio_is_required() -> None:
    answer, plan = answer_offer(build_offer("127.0.0.1", 30000, 30002), "127.0.0.1", 31000, None)
    assert plan.video is None and b"m=video 0 " in answer
    with pytest.raises(SdpRefused):
        answer_offer(BARESIP_OFFER.replace(b"0 8 101", b"18").replace(b"a=rtpmap:0", b"a=x:0"), "127.0.0.1", 1, None)
    with pytest.raises(SdpRefused):
        plan_from_answer(b"v=0\r\no=- 1 1 IN IP4 1.2.3.4\r\ns=-\r\nt=0 0\r\nm=audio 0 RTP/AVP 0\r\n")


def test_hold_offers_are_mirrored_in_the_answer() -> None:
    answer, plan = answer_offer(build_offer("127.0.0.1", 30000, None, 2, "sendonly"), "127.0.0.1", 31000, None)
    assert plan.direction == "recvonly" and b"a=recvonly" in answer


CHROME_ANSWER = """v=0
o=- 1 1 IN IP4 0.0.0.0
s=-
t=0 0
m=audio 9 UDP/TLS/RTP/SAVPF 111
a=rtpmap:111 opus/48000/2
m=video 9 UDP/TLS/RTP/SAVPF 96 97
a=rtpmap:96 VP8/90000
a=rtpmap:97 rtx/90000
a=fmtp:97 apt=96
"""


def test_browser_codecs_reads_payload_types_and_rtx_from_our_answer() -> None:
    codecs = browser_codecs(CHROME_ANSWER)
    assert codecs["audio"].payload_type == 111 and codecs["audio"].clock_rate == 48000
    assert codecs["video"].payload_type == 96 and codecs["video"].rtx == {97: 96}


# --- forwarding -----------------------------------------------------------------------------------


def packet(
    seq: int, ts: int, ssrc: int = 7, pt: int = 96, payload: bytes = b"frame", marker: bool = False
) -> RtpPacket:
    return RtpPacket(pt, seq % 65536, ts % 2**32, ssrc, payload, marker)


def test_the_rewriter_keeps_payloads_and_gaps_and_takes_our_identity() -> None:
    rewriter = StreamRewriter(out_ssrc=99, payload_types={96: 100}, clock_rate=90000, rtx={97: 96})
    first = rewriter.rewrite(packet(10, 3000, marker=True), now=0.0)
    gap = rewriter.rewrite(packet(12, 6000, payload=b"next"), now=0.1)
    assert first is not None and gap is not None
    assert (first.ssrc, first.payload_type, first.payload, first.marker) == (99, 100, b"frame", True)
    assert gap.sequence - first.sequence == 2 and gap.timestamp - first.timestamp == 3000  # the gap stays a gap
    # An RTX retransmission (RFC 4588) is the missing packet, in its own place.
    rtx = rewriter.rewrite(RtpPacket(97, 500, 3000, 8, (11).to_bytes(2, "big") + b"lost"), now=0.2)
    assert rtx is not None and rtx.sequence == first.sequence + 1 and rtx.payload == b"lost"
    assert rewriter.rewrite(RtpPacket(97, 501, 3000, 8, b"\x00\x0b"), now=0.3) is None  # padding probe
    assert rewriter.rewrite(packet(13, 6000, pt=111), now=0.3) is None  # a payload type we did not negotiate


def test_a_new_source_continues_the_outgoing_numbering() -> None:
    rewriter = StreamRewriter(out_ssrc=5, payload_types={111: 111}, clock_rate=48000)
    last = rewriter.rewrite(packet(65535, 2**32 - 960, ssrc=1, pt=111), now=0.0)
    restarted = rewriter.rewrite(packet(17, 123, ssrc=2, pt=111), now=0.02)
    assert last is not None and restarted is not None
    assert restarted.sequence == 0 and restarted.timestamp == 0  # both wrapped, one step on
    inserted = rewriter.reserve(3)
    assert inserted == 1
    after = rewriter.rewrite(packet(18, 1083, ssrc=2, pt=111), now=0.04)
    assert after is not None and after.sequence == 4


@given(st.lists(st.tuples(st.integers(0, 2**16 - 1), st.integers(0, 2**32 - 1), st.binary(min_size=1)), max_size=50))
def test_payloads_are_never_changed(packets: list[tuple[int, int, bytes]]) -> None:
    rewriter = StreamRewriter(out_ssrc=1, payload_types={96: 96}, clock_rate=90000)
    for seq, ts, payload in packets:
        out = rewriter.rewrite(packet(seq, ts, payload=payload), now=0.0)
        assert out is not None and hashlib.sha256(out.payload).digest() == hashlib.sha256(payload).digest()


def test_keyframe_requests_pass_at_most_once_per_interval_plus_a_trailing_one() -> None:
    gate = KeyframeGate(interval=0.5)
    assert gate.request(10.0)
    assert not gate.request(10.1) and not gate.request(10.2)
    assert gate.next_deadline() == 10.5
    assert not gate.on_timer(10.49)
    assert gate.on_timer(10.5)  # the held-back requests become one
    assert gate.next_deadline() is None and not gate.on_timer(11.5)
    assert gate.request(11.5) and (gate.passed, gate.suppressed) == (3, 2)


@given(st.lists(st.floats(0, 0.3), min_size=1, max_size=60))
def test_passed_keyframe_requests_are_an_interval_apart(gaps: list[float]) -> None:
    gate, now, passed = KeyframeGate(interval=0.5), 0.0, []
    for gap in gaps:
        deadline = gate.next_deadline()
        if deadline is not None and deadline <= now + gap and gate.on_timer(deadline):
            passed.append(deadline)
        now += gap
        if gate.request(now):
            passed.append(now)
    assert all(b - a >= 0.5 - 1e-9 for a, b in zip(passed, passed[1:], strict=False))


# --- sign-in throttle, categories, signalling ------------------------------------------------------


def test_failed_sign_ins_throttle_one_address_for_a_window() -> None:
    throttle = LoginThrottle(limit=3, window=60.0)
    for t in range(3):
        assert throttle.allowed("10.0.0.1", t)
        throttle.failed("10.0.0.1", t)
    assert not throttle.allowed("10.0.0.1", 30.0) and throttle.allowed("10.0.0.2", 30.0)
    assert throttle.allowed("10.0.0.1", 60.0)  # the first failure left the window
    throttle.succeeded("10.0.0.1")
    assert throttle.allowed("10.0.0.1", 61.0)


def test_call_categories() -> None:
    assert call_category(["audio", "video"], [True, True], True, True) == "video"
    assert call_category(["audio", "video"], [True, False], True, True) == "voice"
    assert call_category(["audio"], [True], True, False) == "bridged"
    assert call_category(["audio"], [True], False, True) == "bridged"
    assert call_category(["audio"], [True], False, False) == "voice"


def test_client_messages_parse_or_name_the_problem() -> None:
    assert parse_client_message('{"type":"auth","token":"t"}') == Authenticate("t")
    assert parse_client_message('{"type":"call","call":"c1","to":"bob@acme","sdp":"v=0"}') == PlaceCall(
        "c1", "bob@acme", "v=0"
    )
    assert parse_client_message('{"type":"accept","call":"c1","sdp":"v=0"}') == AcceptCall("c1", "v=0")
    assert parse_client_message('{"type":"dtmf","call":"c1","digits":"12#"}') == SendDigits("c1", "12#")
    assert parse_client_message('{"type":"hold","call":"c1","on":true}') == SetHold("c1", True)
    for bad in (
        "[]",
        "nope",
        '{"type":"call","call":"c 1","to":"b","sdp":"x"}',
        '{"type":"dtmf","call":"c","digits":"x"}',
        '{"type":"hold","call":"c","on":"yes"}',
        '{"type":"reboot"}',
        '{"type":"call","call":"c","to":"<a>","sdp":"x"}',
    ):
        with pytest.raises(SignallingError):
            parse_client_message(bad)
    with pytest.raises(SignallingError) as big:
        parse_client_message('{"type":"auth","token":"' + "x" * 70000 + '"}')
    assert big.value.code == "too_large"
    assert end_reason(486) == "busy" and end_reason(403) == "forbidden" and end_reason(599) == "failed"
