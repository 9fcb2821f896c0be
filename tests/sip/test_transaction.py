from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.sip.errors import TransactionError
from gateway.sip.message import Request, make_response
from gateway.sip.parser import parse_message
from gateway.sip.peer import Peer
from gateway.sip.transaction import (
    TABLES,
    AckReceived,
    Input,
    Kind,
    RequestReceived,
    ResponseReceived,
    State,
    TimerConfig,
    TransactionLayer,
    TransactionTimedOut,
)

from .helpers import request, response_to

PEER = Peer("10.0.0.1", 5060)


def run_until(layer: TransactionLayer, end: float) -> tuple[list[float], list[object]]:
    """Fire every timer up to ``end``; return when datagrams went out and what events came up."""
    sent_at: list[float] = []
    events: list[object] = []
    while (deadline := layer.next_deadline()) is not None and deadline <= end:
        events += layer.handle_timers(deadline)
        sent_at += [deadline] * len(layer.take_outgoing())
    return sent_at, events


def test_client_invite_retransmits_with_doubling_then_times_out() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5))
    key = layer.send_request(request(), PEER, now=0.0)
    assert len(layer.take_outgoing()) == 1
    sent_at, events = run_until(layer, 100)
    assert sent_at == [0.5, 1.5, 3.5, 7.5, 15.5, 31.5]  # Timer A: T1, 2T1, 4T1 ...
    assert events == [TransactionTimedOut(key)]  # Timer B at 64*T1 = 32 s
    assert len(layer) == 0


def test_satellite_t1_stretches_every_timer() -> None:
    layer = TransactionLayer(TimerConfig(t1=2.0, t2=8.0))
    key = layer.send_request(request("OPTIONS"), PEER, now=0.0)
    layer.take_outgoing()
    sent_at, events = run_until(layer, 1000)
    assert sent_at[:4] == [2.0, 6.0, 14.0, 22.0]  # E doubles from T1, capped at T2
    assert events == [TransactionTimedOut(key)]
    assert sent_at[-1] < 128.0  # Timer F = 64*T1


def test_provisional_stops_invite_retransmissions() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PEER, now=0.0)
    layer.take_outgoing()
    events = layer.receive(response_to(req, 180), PEER, now=0.1)
    assert isinstance(events[0], ResponseReceived) and events[0].key == key
    assert layer.state(key) is State.PROCEEDING
    sent_at, events = run_until(layer, 100)
    assert sent_at == [] and events == []


def test_non_2xx_final_is_acked_by_the_transaction_and_retransmissions_re_acked() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PEER, now=0.0)
    layer.take_outgoing()
    busy = response_to(req, 486)
    events = layer.receive(busy, PEER, now=0.2)
    assert [type(e) for e in events] == [ResponseReceived]
    ((ack_bytes, dest),) = layer.take_outgoing()
    ack = parse_message(ack_bytes)
    assert ack.method == "ACK" and ack.top_via.branch == req.top_via.branch and dest == PEER  # type: ignore[union-attr]
    assert layer.receive(busy, PEER, now=0.3) == []  # absorbed...
    assert len(layer.take_outgoing()) == 1  # ...but ACKed again
    assert layer.state(key) is State.COMPLETED
    run_until(layer, 100)
    assert len(layer) == 0


def test_2xx_retransmissions_reach_the_tu_in_accepted() -> None:
    layer = TransactionLayer()
    req = request()
    key = layer.send_request(req, PEER, now=0.0)
    ok = response_to(req, 200)
    assert len(layer.receive(ok, PEER, now=0.1)) == 1
    assert layer.state(key) is State.ACCEPTED
    assert len(layer.receive(ok, PEER, now=0.6)) == 1  # so the TU can ACK again
    run_until(layer, 100)
    assert len(layer) == 0


def test_server_invite_sends_100_when_the_tu_is_slow_and_absorbs_retransmissions() -> None:
    layer = TransactionLayer()
    req = request()
    events = layer.receive(req, Peer("10.0.0.1", 40000), now=0.0)
    assert len(events) == 1 and isinstance(events[0], RequestReceived)
    assert layer.take_outgoing() == []  # the TU may still answer in time (RFC 3261 section 17.2.1)
    assert layer.next_deadline() == TimerConfig().trying < 0.2
    assert layer.handle_timers(TimerConfig().trying) == []
    ((data, dest),) = layer.take_outgoing()
    assert data.startswith(b"SIP/2.0 100 Trying") and dest == Peer("10.0.0.1", 40000)  # rport honoured
    assert b"rport=40000;received=10.0.0.1" in data  # RFC 3581 section 4
    assert layer.receive(req, Peer("10.0.0.1", 40000), now=0.5) == []
    assert layer.take_outgoing() == [(data, dest)]  # the 100 again


def test_an_answer_within_the_wait_goes_without_its_100_trying() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request(), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    assert layer.take_outgoing() == []  # what arrived was handled; the TU answers a little later
    layer.respond(event.key, make_response(event.request, 407, to_tag="x"), now=0.01)
    ((data, _),) = layer.take_outgoing()
    assert data.startswith(b"SIP/2.0 407 ")
    run_until(layer, 0.2)
    assert layer.take_outgoing() == []  # no 100 after the final answer
    # A retransmitted INVITE gets the final answer again, not a 100.
    assert layer.receive(request(), PEER, now=0.5) == []
    ((again, _),) = layer.take_outgoing()
    assert again == data


def test_a_retransmission_before_the_100_is_due_gets_it_at_once_and_only_once() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5, trying=0.15))
    (event,) = layer.receive(request(), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    assert layer.receive(request(), PEER, now=0.1) == []
    ((trying, _),) = layer.take_outgoing()
    assert trying.startswith(b"SIP/2.0 100 ")
    sent_at, _ = run_until(layer, 1.0)
    assert sent_at == []  # the wait was over: nothing more until the TU answers


def test_the_100_trying_stays_once_it_has_left() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request(), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.handle_timers(0.1)
    ((trying, _),) = layer.take_outgoing()
    layer.respond(event.key, make_response(event.request, 180, to_tag="x"), now=0.1)
    ((ringing, _),) = layer.take_outgoing()
    assert trying.startswith(b"SIP/2.0 100 ") and ringing.startswith(b"SIP/2.0 180 ")


def test_other_transactions_keep_their_100_trying() -> None:
    layer = TransactionLayer()
    (first,) = layer.receive(request(branch="z9hG4bK-one"), PEER, now=0.0)
    (second,) = layer.receive(request(branch="z9hG4bK-two", call_id="two@h"), PEER, now=0.0)
    assert isinstance(first, RequestReceived) and isinstance(second, RequestReceived)
    layer.respond(first.key, make_response(first.request, 407, to_tag="x"), now=0.0)
    layer.handle_timers(0.1)
    sent = [data.split(b"\r\n", 1)[0] for data, _ in layer.take_outgoing()]
    assert sent == [b"SIP/2.0 407 Proxy Authentication Required", b"SIP/2.0 100 Trying"]


def test_server_invite_failure_retransmits_until_ack() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5, t2=4.0))
    req = request()
    (event,) = layer.receive(req, PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.take_outgoing()
    layer.respond(event.key, make_response(event.request, 486, to_tag="x"), now=0.0)
    layer.take_outgoing()
    sent_at, _ = run_until(layer, 3.9)
    assert sent_at == [0.5, 1.5, 3.5]  # Timer G
    ack = request("ACK", to_tag="x")
    assert layer.receive(ack, PEER, now=4.0) == []  # non-2xx ACK stays in the transaction
    assert layer.state(event.key) is State.CONFIRMED
    sent_at, events = run_until(layer, 100)
    assert sent_at == [] and events == [] and len(layer) == 0


def test_server_invite_failure_without_ack_times_out() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request(), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, make_response(event.request, 486, to_tag="x"), now=0.0)
    _, events = run_until(layer, 100)
    assert events == [TransactionTimedOut(event.key)]


def test_server_invite_2xx_is_retransmitted_until_its_ack_arrives() -> None:
    layer = TransactionLayer(TimerConfig(t1=0.5, t2=4.0))
    (event,) = layer.receive(request(), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.take_outgoing()
    layer.respond(event.key, make_response(event.request, 200, to_tag="x"), now=0.0)
    layer.take_outgoing()
    sent_at, _ = run_until(layer, 8.0)
    assert sent_at == [0.5, 1.5, 3.5, 7.5]
    ack = request("ACK", branch="z9hG4bKother", to_tag="x")  # the 2xx ACK has its own branch
    events = layer.receive(ack, PEER, now=8.1)
    assert [type(e) for e in events] == [AckReceived]
    sent_at, events = run_until(layer, 100)
    assert sent_at == [] and events == [] and len(layer) == 0


def test_missing_2xx_ack_is_reported() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request(), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, make_response(event.request, 200, to_tag="x"), now=0.0)
    _, events = run_until(layer, 100)
    assert events == [TransactionTimedOut(event.key, after_success=True)]


def test_stray_ack_goes_to_the_tu() -> None:
    layer = TransactionLayer()
    events = layer.receive(request("ACK", to_tag="x"), PEER, now=0.0)
    assert [type(e) for e in events] == [AckReceived]


def test_cancel_names_the_invite_it_targets() -> None:
    layer = TransactionLayer()
    (invite,) = layer.receive(request(), PEER, now=0.0)
    (cancel,) = layer.receive(request("CANCEL"), PEER, now=0.1)
    assert isinstance(invite, RequestReceived) and isinstance(cancel, RequestReceived)
    assert cancel.cancels == invite.key and cancel.key != invite.key


def test_server_non_invite_resends_final_for_retransmissions_then_forgets() -> None:
    layer = TransactionLayer()
    req = request("REGISTER")
    (event,) = layer.receive(req, PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    assert layer.take_outgoing() == []  # no automatic 100 for non-INVITE
    layer.respond(event.key, make_response(req, 200), now=0.0)
    layer.take_outgoing()
    assert layer.receive(req, PEER, now=1.0) == []
    assert len(layer.take_outgoing()) == 1
    run_until(layer, 100)
    assert len(layer) == 0


def test_tu_errors_are_refused() -> None:
    layer = TransactionLayer()
    (event,) = layer.receive(request("OPTIONS"), PEER, now=0.0)
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, make_response(event.request, 200), now=0.0)
    with pytest.raises(TransactionError):
        layer.respond(event.key, make_response(event.request, 200), now=0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request("ACK"), PEER, now=0.0)
    with pytest.raises(TransactionError):
        layer.send_request(request(branch="nomagic"), PEER, now=0.0)


def test_responses_with_several_vias_are_not_ours() -> None:
    layer = TransactionLayer()
    req = request()
    layer.send_request(req, PEER, now=0.0)
    resp = response_to(req, 180, extra="Via: SIP/2.0/UDP 9.9.9.9;branch=z9hG4bKzz\r\n")
    assert layer.receive(resp, PEER, now=0.1) == []


# --- every (state, input) pair: a table entry is followed, anything else leaves the state alone ----

NETWORK_INPUTS = [Input.PROVISIONAL, Input.SUCCESS, Input.FAILURE, Input.REQUEST, Input.ACK]


def _drive_to(kind: Kind, state: State) -> tuple[TransactionLayer, object, float, Request]:
    """A layer holding one transaction of ``kind`` in ``state``, and the request that began it."""
    layer = TransactionLayer()
    req = request("INVITE" if kind in (Kind.CLIENT_INVITE, Kind.SERVER_INVITE) else "OPTIONS")
    if kind in (Kind.CLIENT_INVITE, Kind.CLIENT_NON_INVITE):
        key = layer.send_request(req, PEER, 0.0)
        steps = {
            State.CALLING: [],
            State.TRYING: [],
            State.PROCEEDING: [180],
            State.ACCEPTED: [200],
            State.COMPLETED: [486],
        }[state]
        for status in steps:
            layer.receive(response_to(req, status), PEER, 0.1)
        return layer, key, 0.1, req
    (event,) = layer.receive(req, PEER, 0.0)
    assert isinstance(event, RequestReceived)
    key = event.key
    if state is State.PROCEEDING and kind is Kind.SERVER_NON_INVITE:
        layer.respond(key, make_response(req, 180, to_tag="x"), 0.0)
    if state in (State.ACCEPTED, State.ACKED):
        layer.respond(key, make_response(req, 200, to_tag="x"), 0.0)
    if state is State.ACKED:
        layer.receive(request("ACK", branch="z9hG4bKack", to_tag="x"), PEER, 0.1)
    if state in (State.COMPLETED, State.CONFIRMED):
        layer.respond(key, make_response(req, 486, to_tag="x"), 0.0)
    if state is State.CONFIRMED:
        layer.receive(request("ACK", to_tag="x"), PEER, 0.1)
    return layer, key, 0.1, req


REACHABLE = (
    [(Kind.CLIENT_INVITE, s) for s in (State.CALLING, State.PROCEEDING, State.ACCEPTED, State.COMPLETED)]
    + [(Kind.CLIENT_NON_INVITE, s) for s in (State.TRYING, State.PROCEEDING, State.COMPLETED)]
    + [
        (Kind.SERVER_INVITE, s)
        for s in (State.PROCEEDING, State.ACCEPTED, State.ACKED, State.COMPLETED, State.CONFIRMED)
    ]
    + [(Kind.SERVER_NON_INVITE, s) for s in (State.TRYING, State.PROCEEDING, State.COMPLETED)]
)


@pytest.mark.parametrize(("kind", "state"), REACHABLE)
def test_drive_reaches_every_state(kind: Kind, state: State) -> None:
    layer, key, _, _ = _drive_to(kind, state)
    assert layer.state(key) is state  # type: ignore[arg-type]


@settings(max_examples=400, deadline=None)
@given(st.sampled_from(REACHABLE), st.sampled_from(NETWORK_INPUTS))
def test_every_network_input_in_every_state(pair: tuple[Kind, State], inp: Input) -> None:
    kind, state = pair
    layer, key, now, req = _drive_to(kind, state)
    if inp is Input.REQUEST:
        message = req
    elif inp is Input.ACK:
        message = request("ACK", to_tag="x")
    else:
        message = response_to(req, {Input.PROVISIONAL: 180, Input.SUCCESS: 200, Input.FAILURE: 486}[inp])
    is_client = kind in (Kind.CLIENT_INVITE, Kind.CLIENT_NON_INVITE)
    applies = (is_client and inp in (Input.PROVISIONAL, Input.SUCCESS, Input.FAILURE)) or (
        not is_client and inp in (Input.REQUEST, Input.ACK)
    )
    layer.receive(message, PEER, now + 0.01)
    expected = TABLES[kind].get((state, inp)) if applies else None
    new_state = layer.state(key)  # type: ignore[arg-type]
    if expected is None:
        assert new_state is state
    else:
        assert new_state is (None if expected.next is State.TERMINATED else expected.next)


def test_a_satellite_trunk_has_its_own_timers() -> None:
    from gateway.config import TrunkConfig
    from gateway.trunks import trunk_timers

    default = TimerConfig(t1=0.5, t2=4.0, t4=5.0)
    assert trunk_timers(TrunkConfig(name="hq", tenant="acme", host="10.0.0.5"), default) is None
    sat = trunk_timers(TrunkConfig(name="hq", tenant="acme", host="10.0.0.5", t1_ms=800, timer_b_ms=90000), default)
    assert sat == TimerConfig(t1=0.8, t2=4.0, t4=5.0, timer_b=90.0)
    layer = TransactionLayer(default)
    key = layer.send_request(request(), PEER, now=0.0, timers=sat)
    layer.take_outgoing()
    sent_at, events = run_until(layer, 200)
    assert [round(t, 3) for t in sent_at[:3]] == [0.8, 2.4, 5.6]  # Timer A from the trunk's T1
    assert events == [TransactionTimedOut(key)] and sent_at[-1] < 90.0  # Timer B as configured


def test_answered_transactions_keep_only_what_retransmissions_need() -> None:
    """Once answered, a transaction drops its parsed request (thousands wait up to 64*T1, and
    every full garbage collection walks what they hold) yet absorbs retransmissions as before."""
    layer = TransactionLayer()
    # Server non-INVITE: a retransmitted request gets the same answer, byte for byte.
    options = request("OPTIONS", branch="z9hG4bKopt")
    (event,) = layer.receive(options, PEER, 0.0)
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, make_response(event.request, 200, to_tag="x"), 0.0)
    (answer,) = layer.take_outgoing()
    assert layer.request_of(event.key) is None
    assert layer.receive(options, PEER, 0.5) == []
    assert layer.take_outgoing() == [answer]

    # Client INVITE refused: each retransmitted 486 gets the same ACK, built once.
    invite = request("INVITE", branch="z9hG4bKinv", call_id="call-2")
    key = layer.send_request(invite, PEER, 0.0)
    layer.take_outgoing()
    busy = response_to(invite, 486)
    (up,) = layer.receive(busy, PEER, 0.1)
    assert isinstance(up, ResponseReceived)
    (ack,) = layer.take_outgoing()
    assert ack[0].startswith(b"ACK sip:bob@acme SIP/2.0\r\n") and b"CSeq: 1 ACK" in ack[0]
    assert layer.request_of(key) is None
    assert layer.receive(busy, PEER, 0.6) == []
    assert layer.take_outgoing() == [ack]

    # Server INVITE answered 2xx: its ACK (a new branch) is still matched by Call-ID and CSeq.
    call = request("INVITE", branch="z9hG4bKsrv", call_id="call-3")
    (event,) = layer.receive(call, PEER, 0.0)
    assert isinstance(event, RequestReceived)
    layer.respond(event.key, make_response(event.request, 200, to_tag="x"), 0.0)
    layer.take_outgoing()
    assert layer.request_of(event.key) is None
    ack_request = request("ACK", branch="z9hG4bKack2", call_id="call-3", to_tag="x")
    (acked,) = layer.receive(ack_request, PEER, 0.2)
    assert isinstance(acked, AckReceived)
    assert acked.request.call_id == "call-3"
    run_until(layer, 100)
    assert len(layer) == 0


def test_a_stamped_request_reads_as_its_bytes_parse_without_parsing_again() -> None:
    """The server transport stamps received and rport on the top Via; what the parser already
    read (From, To, CSeq, Contact, the other Vias) carries over to the stamped request."""
    layer = TransactionLayer()
    sent = parse_message(
        b"INVITE sip:bob@acme SIP/2.0\r\n"
        b"Via: SIP/2.0/UDP 192.168.1.5:5060;branch=z9hG4bKst1;rport\r\n"
        b"Via: SIP/2.0/UDP 10.9.9.9:5070;branch=z9hG4bKup\r\n"
        b"Max-Forwards: 70\r\nFrom: <sip:alice@acme>;tag=a1\r\nTo: <sip:bob@acme>\r\n"
        b"Call-ID: stamp-1\r\nCSeq: 7 INVITE\r\nContact: <sip:alice@192.168.1.5>\r\nContent-Length: 0\r\n\r\n"
    )
    assert isinstance(sent, Request)
    (event,) = layer.receive(sent, Peer("203.0.113.7", 40001), 0.0)
    assert isinstance(event, RequestReceived)
    stamped = event.request
    assert stamped.top_via.received == "203.0.113.7" and stamped.top_via.rport == "40001"
    assert stamped.from_ is sent.from_ and stamped.to is sent.to and stamped.cseq is sent.cseq
    assert stamped.contacts is sent.contacts
    reparsed = parse_message(bytes(stamped))
    assert isinstance(reparsed, Request)
    assert stamped.vias == reparsed.vias and stamped.top_via == reparsed.top_via == stamped.vias[0]
    assert (stamped.from_, stamped.to, stamped.cseq, stamped.contacts) == (
        reparsed.from_,
        reparsed.to,
        reparsed.cseq,
        reparsed.contacts,
    )


def test_transactions_waiting_out_their_last_timer_are_nothing_the_collector_walks() -> None:
    import gc

    layer = TransactionLayer()
    bye = request("BYE")
    (received,) = layer.receive(bye, PEER, now=0.0)
    assert isinstance(received, RequestReceived)
    layer.respond(received.key, make_response(bye, 200), now=0.0)
    ((ok_bytes, _),) = layer.take_outgoing()
    invite = request("INVITE")
    (inv,) = layer.receive(invite, PEER, now=0.0)
    assert isinstance(inv, RequestReceived)
    layer.respond(inv.key, make_response(invite, 200, to_tag="t"), now=0.0)
    layer.take_outgoing()
    ack = request("ACK", to_tag="t", branch="z9hG4bK-its-own")
    assert [type(e) for e in layer.receive(ack, PEER, now=0.1)] == [AckReceived]
    assert layer.state(received.key) is State.COMPLETED and layer.state(inv.key) is State.ACKED

    gc.collect()
    gc.collect()  # a tuple is let go once what it holds has been (a pass for each level)
    # The dictionary and heap holding them are walked, but nothing in them is.
    assert not any(gc.is_tracked(o) for o in [*layer._resting, *layer._resting.values(), *layer._heap])
    assert len(layer) == 2
    # Still answering as the state machine says: the same 200 for a retransmitted BYE, and a
    # retransmitted ACK for the 2xx (and the INVITE itself) absorbed.
    assert layer.receive(bye, PEER, now=1.0) == [] and layer.take_outgoing() == [(ok_bytes, PEER)]
    assert layer.receive(ack, PEER, now=1.0) == [] and layer.receive(invite, PEER, now=1.0) == []
    assert layer.take_outgoing() == []
    run_until(layer, 100)  # Timers J and L end them
    assert len(layer) == 0 and layer.state(inv.key) is None
    assert [type(e) for e in layer.receive(ack, PEER, now=101)] == [AckReceived]  # no transaction left to absorb it
