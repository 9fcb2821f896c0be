"""The B2BUA call core driven without sockets or sleeps."""

from __future__ import annotations

from gateway.b2bua import (
    Call,
    CallAnswered,
    CallEnded,
    CallSettings,
    ForkTarget,
    MediaRemoteChanged,
    Party,
    Phase,
    SendAck,
    SendRequest,
    SendResponse,
    StreamPorts,
    choose_failure,
)
from gateway.sip.peer import Peer
from gateway.sip.sdp import parse_sdp

from .helpers import request, response_to
from .test_sdp import BARESIP_OFFER

ANSWER = BARESIP_OFFER.replace(b"10000", b"30000").replace(b"127.0.0.1", b"127.0.0.2")
A_KEY = ("z9hG4bKa", "10.0.0.1:5060", "INVITE", True)


def new_call(forks: int = 2) -> tuple[Call, list[SendRequest]]:
    invite = request(
        "INVITE",
        extra="Contact: <sip:alice@10.0.0.1:5060>\r\nContent-Type: application/sdp\r\n",
        body=BARESIP_OFFER,
    )
    call = Call(
        session_id="ab" * 16,
        caller=Party("alice", "acme", "kinshasa"),
        callee=Party("bob", "acme", "kinshasa"),
        invite=invite,
        invite_key=A_KEY,
        source=Peer("10.0.0.1", 5060),
        settings=CallSettings(
            local_hosts=(("UDP", "192.0.2.1:5060"), ("TCP", "192.0.2.1:5060")),
            media_address="192.0.2.1",
            ring_timeout=60,
        ),
        started=0.0,
    )
    targets = [ForkTarget(f"sip:bob@10.0.1.{i}:5060", Peer(f"10.0.1.{i}", 5060)) for i in range(forks)]
    actions = call.start(targets, [StreamPorts(a=20000, b=20002)], now=0.0)
    assert isinstance(actions[0], MediaRemoteChanged) and actions[0].endpoints == (("127.0.0.1", 10000),)
    sends = [a for a in actions if isinstance(a, SendRequest)]
    return call, sends


def only(actions: list[object], kind: type) -> list:  # type: ignore[type-arg]
    return [a for a in actions if isinstance(a, kind)]


def test_forks_to_every_contact_with_anchored_sdp_and_session_id() -> None:
    call, sends = new_call(2)
    assert [s.destination for s in sends] == [Peer("10.0.1.0", 5060), Peer("10.0.1.1", 5060)]
    inv = sends[0].request
    assert (
        inv.headers.get(
            "Session-ID",
        )
        == f"{'ab' * 16};remote={'0' * 32}"
    )
    sdp = parse_sdp(inv.body)
    assert sdp.connection == "IN IP4 192.0.2.1" and sdp.media[0].port == 20002
    assert inv.headers.get("Max-Forwards") == "69"
    assert sends[0].request.call_id == sends[1].request.call_id
    assert sends[0].key != sends[1].key


def test_first_answer_wins_others_cancelled_then_bye_ends_with_record_first() -> None:
    call, (f0, f1) = new_call(2)
    ringing = call.on_response(f0.key, response_to(f0.request, 180, to_tag="r0"), now=1.0)
    (relayed,) = only(ringing, SendResponse)
    assert relayed.key == A_KEY and relayed.response.status == 180 and relayed.response.to.tag
    call.on_response(f1.key, response_to(f1.request, 100), now=1.0)
    ok = response_to(
        f1.request,
        200,
        to_tag="w1",
        body=ANSWER,
        extra="Contact: <sip:bob@10.0.1.1>\r\nContent-Type: application/sdp\r\n",
    )
    actions = call.on_response(f1.key, ok, now=5.0)
    (ack,) = only(actions, SendAck)
    assert ack.request.method == "ACK" and ack.destination == Peer("10.0.1.1", 5060)
    cancels = [a for a in only(actions, SendRequest) if a.request.method == "CANCEL"]
    assert len(cancels) == 1 and cancels[0].request.top_via.branch == f0.request.top_via.branch
    (media,) = only(actions, MediaRemoteChanged)
    assert media.leg == "b" and media.endpoints == (("127.0.0.2", 30000),)
    (to_a,) = only(actions, SendResponse)
    assert to_a.response.status == 200
    assert parse_sdp(to_a.response.body).media[0].port == 20000  # the caller talks to our A-side port
    assert only(actions, CallAnswered) == [CallAnswered("PCMU")]
    assert call.phase is Phase.ANSWERED and call.answered_at == 5.0

    # the cancelled fork answers 487; the caller ACKs; then hangs up
    call.on_response(f0.key, response_to(f0.request, 487, to_tag="r0"), now=5.1)
    call.on_ack("a", now=5.2)
    assert call.phase is Phase.CONFIRMED
    assert call.a is not None
    bye = request("BYE", call_id=call.a.call_id, to_tag=call.a.local_tag, cseq=2)
    actions = call.on_request("a", ("z9hG4bKbye", "x", "BYE", True), bye, now=65.0)
    (bye_b,) = only(actions, SendRequest)
    assert bye_b.request.method == "BYE" and bye_b.request.call_id == f1.request.call_id
    assert bye_b.request.to.tag == "w1"
    (ended,) = only(actions, CallEnded)
    assert ended.disposition == "answered" and ended.ended_by == "caller"
    # The caller's 200 for BYE waits for the record: it is inside CallEnded, not sent yet.
    assert not only(actions, SendResponse) and ended.then_send[0].response.status == 200
    assert call.finished


def test_cancel_before_answer_gives_487_after_the_record() -> None:
    call, (f0,) = new_call(1)
    call.on_response(f0.key, response_to(f0.request, 180), now=1.0)
    actions = call.on_cancel(now=2.0)
    (cancel,) = only(actions, SendRequest)
    assert cancel.request.method == "CANCEL"
    (ended,) = only(actions, CallEnded)
    assert ended.disposition == "cancelled" and ended.then_send[0].response.status == 487
    assert not call.finished  # the fork still owes its 487
    call.on_response(f0.key, response_to(f0.request, 487), now=2.1)
    assert call.finished


def test_cancel_waits_for_a_provisional_response() -> None:
    call, (f0,) = new_call(1)
    actions = call.on_cancel(now=0.5)
    assert not only(actions, SendRequest)  # RFC 3261 section 9.1
    late = call.on_response(f0.key, response_to(f0.request, 100), now=1.0)
    assert [a.request.method for a in only(late, SendRequest)] == ["CANCEL"]


def test_all_busy_gives_486() -> None:
    call, (f0, f1) = new_call(2)
    assert call.on_response(f0.key, response_to(f0.request, 486), now=1.0) == []
    (ended,) = only(call.on_response(f1.key, response_to(f1.request, 480), now=1.5), CallEnded)
    assert ended.disposition == "busy" and ended.then_send[0].response.status == 486


def test_ring_timeout_cancels_and_answers_480() -> None:
    call, (f0,) = new_call(1)
    call.on_response(f0.key, response_to(f0.request, 180), now=1.0)
    assert call.next_deadline() == 60.0
    actions = call.on_timer(now=60.0)
    assert [a.request.method for a in only(actions, SendRequest)] == ["CANCEL"]
    (ended,) = only(actions, CallEnded)
    assert ended.then_send[0].response.status == 480 and ended.disposition == "no_answer"


def test_unresponsive_fork_is_forgotten_after_cancel_grace() -> None:
    call, (f0,) = new_call(1)
    call.on_response(f0.key, response_to(f0.request, 180), now=1.0)
    call.on_cancel(now=2.0)
    assert not call.finished
    deadline = call.next_deadline()
    assert deadline == 34.0
    call.on_timer(deadline)
    assert call.finished


def test_a_late_second_answer_is_acked_and_hung_up() -> None:
    call, (f0, f1) = new_call(2)
    ok0 = response_to(f0.request, 200, to_tag="w0", body=ANSWER, extra="Content-Type: application/sdp\r\n")
    call.on_response(f0.key, ok0, now=1.0)
    ok1 = response_to(f1.request, 200, to_tag="w1", body=ANSWER, extra="Content-Type: application/sdp\r\n")
    actions = call.on_response(f1.key, ok1, now=1.1)
    assert [type(a) for a in actions] == [SendAck, SendRequest]
    assert actions[1].request.method == "BYE" and actions[1].request.to.tag == "w1"  # type: ignore[union-attr]
    # ...while a retransmission of the winner's 200 is only re-ACKed
    again = call.on_response(f0.key, ok0, now=1.2)
    assert [type(a) for a in again] == [SendAck]


def test_caller_never_acks_our_200() -> None:
    call, (f0,) = new_call(1)
    ok = response_to(f0.request, 200, to_tag="w", body=ANSWER, extra="Content-Type: application/sdp\r\n")
    call.on_response(f0.key, ok, now=1.0)
    actions = call.on_timeout(A_KEY, now=33.0)
    assert sorted(a.request.method for a in only(actions, SendRequest)) == ["BYE", "BYE"]
    assert only(actions, CallEnded)[0].ended_by == "system"


def test_reinvite_is_relayed_with_sdp_anchored_for_the_other_side() -> None:
    call, (f0,) = new_call(1)
    ok = response_to(f0.request, 200, to_tag="w", body=ANSWER, extra="Content-Type: application/sdp\r\n")
    call.on_response(f0.key, ok, now=1.0)
    call.on_ack("a", now=1.1)
    assert call.a is not None
    hold = BARESIP_OFFER.replace(b"a=sendrecv", b"a=sendonly")
    reinvite = request(
        "INVITE",
        call_id=call.a.call_id,
        to_tag=call.a.local_tag,
        cseq=2,
        body=hold,
        extra="Content-Type: application/sdp\r\n",
    )
    server_key = ("z9hG4bKre", "x", "INVITE", True)
    actions = call.on_request("a", server_key, reinvite, now=10.0)
    (fwd,) = only(actions, SendRequest)
    assert fwd.request.method == "INVITE" and fwd.request.to.tag == "w"
    fwd_sdp = parse_sdp(fwd.request.body)
    assert fwd_sdp.media[0].port == 20002 and fwd_sdp.media[0].direction == "sendonly"
    answer = response_to(
        fwd.request,
        200,
        to_tag="w",
        body=ANSWER.replace(b"sendrecv", b"recvonly"),
        extra="Content-Type: application/sdp\r\n",
    )
    back = call.on_response(fwd.key, answer, now=10.5)
    assert [type(a) for a in back] == [MediaRemoteChanged, SendAck, SendResponse]
    resp = back[2]
    assert isinstance(resp, SendResponse) and resp.key == server_key
    assert parse_sdp(resp.response.body).media[0].direction == "recvonly"
    assert parse_sdp(resp.response.body).media[0].port == 20000


def test_failure_choice() -> None:
    assert choose_failure([480, 603]) == 603
    assert choose_failure([408, 486]) == 486
    assert choose_failure([408, 487]) == 480
    assert choose_failure([404, 480]) == 404


def test_info_digit_becomes_rfc4733_for_the_other_phone() -> None:
    from gateway.b2bua import DtmfToSend

    call, (f0,) = new_call(1)
    ok = response_to(f0.request, 200, to_tag="w", body=ANSWER, extra="Content-Type: application/sdp\r\n")
    call.on_response(f0.key, ok, now=1.0)
    assert call.a is not None
    info = request(
        "INFO",
        call_id=call.a.call_id,
        to_tag=call.a.local_tag,
        cseq=2,
        body=b"Signal=7\r\nDuration=250\r\n",
        extra="Content-Type: application/dtmf-relay\r\n",
    )
    actions = call.on_request("a", ("z9hG4bKinfo", "x", "INFO", True), info, now=2.0)
    assert actions[1] == DtmfToSend("b", "7", 250, 101)  # bob's SDP asked for events in payload 101
    assert isinstance(actions[0], SendResponse) and actions[0].response.status == 200
    other = request("INFO", call_id=call.a.call_id, to_tag=call.a.local_tag, cseq=3, body=b"hello",
                    extra="Content-Type: text/plain\r\n")  # fmt: skip
    relayed = call.on_request("a", ("z9hG4bKinfo2", "x", "INFO", True), other, now=3.0)
    assert [type(a) for a in relayed] == [SendRequest]  # not a digit: passed through to bob
