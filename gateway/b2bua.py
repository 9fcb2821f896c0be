"""One B2BUA call as a sans-I/O state machine.

A call has an A leg (the caller's INVITE, which we answer as a UAS) and one or
more B-leg forks (INVITEs we send as a UAC, one per contact of the callee);
the first fork to answer becomes the B leg and the others are cancelled.

Inputs are method calls carrying ``now``; outputs are actions for the SIP
service to carry out (send this, answer that, point media there, the call has
ended). The call never waits: it remembers what it is owed (a final response
to a fork, the ACK from the caller) and acts when that input arrives.
"""

from __future__ import annotations

import enum
import uuid
from dataclasses import dataclass, field
from typing import Literal

from gateway.sip.client_auth import ClientCredentials, authorization_for
from gateway.sip.dialog import Dialog, new_tag, via_header
from gateway.sip.dtmf_info import info_digit
from gateway.sip.errors import SipProtocolError
from gateway.sip.headers import NameAddr
from gateway.sip.lazy import once
from gateway.sip.message import Headers, Request, Response, make_response
from gateway.sip.peer import Peer, uri_transport_param
from gateway.sip.randomness import token_bytes
from gateway.sip.sdp import (
    SdpError,
    SessionDescription,
    anchor,
    first_codec,
    media_endpoints,
    parse_sdp,
    sdp_of,
    telephone_event_payload,
)
from gateway.sip.shard import Shard
from gateway.sip.transaction import TimerConfig, TxKey, client_key
from gateway.sip.uri import parse_uri

Addr = tuple[str, int]  # a media address
Leg = Literal["a", "b"]
EndedBy = Literal["caller", "callee", "system"]


# --- actions -------------------------------------------------------------------


@dataclass(frozen=True)
class SendRequest:
    request: Request
    destination: Peer
    timers: TimerConfig | None = None  # per-peer timers (satellite trunks)

    @property
    def key(self) -> TxKey:
        return client_key(self.request.top_via.branch or "", self.request.method)


@dataclass(frozen=True)
class SendAck:
    request: Request
    destination: Peer


@dataclass(frozen=True)
class SendResponse:
    key: TxKey
    response: Response


@dataclass(frozen=True)
class MediaRemoteChanged:
    """A leg's SDP told us where it wants media: one entry per stream (None: no media)."""

    leg: Leg
    endpoints: tuple[Addr | None, ...]


@dataclass(frozen=True)
class DtmfToSend:
    """Play a key press to ``leg``'s phone as RFC 4733 events in its telephone-event payload type."""

    leg: Leg
    digit: str
    duration_ms: int
    payload_type: int


@dataclass(frozen=True)
class CallAnswered:
    codec: str


@dataclass(frozen=True)
class CallEnded:
    """Write the call record, then send ``then_send`` (the call is over only once both are done)."""

    disposition: Literal["answered", "no_answer", "busy", "failed", "cancelled", "rejected"]
    status: int
    ended_by: EndedBy
    then_send: tuple[SendResponse, ...] = ()


Action = SendRequest | SendAck | SendResponse | MediaRemoteChanged | DtmfToSend | CallAnswered | CallEnded


# --- inputs that describe the call ------------------------------------------------


@dataclass(frozen=True)
class Party:
    user: str
    tenant: str
    site: str
    display: str = ""
    # The billing account charged when this party calls (default: the user's address).
    account: str = ""
    # The user's number (extension), presented as the caller's identity on trunks.
    number: str = ""
    # The trunk this party is reached through (or calls from); empty for our own users.
    trunk: str = ""

    @once  # read a dozen times per call set-up
    def address(self) -> str:
        return f"{self.user}@{self.tenant}"

    @property
    def via_trunk(self) -> bool:
        return bool(self.trunk)

    @once
    def record_name(self) -> str:
        """How call records name this party: a user's address, or the number a trunk carried."""
        return self.user if self.via_trunk else self.address


@dataclass(frozen=True)
class ForkTarget:
    contact: str  # the Request-URI
    destination: Peer
    # Towards a trunk: who we say we are, the credentials its challenges get, its timers.
    from_uri: str | None = None
    to_uri: str | None = None
    credentials: ClientCredentials | None = None
    timers: TimerConfig | None = None


@dataclass(frozen=True)
class StreamPorts:
    """The relay's RTP ports for one media stream: the one facing A, the one facing B."""

    a: int
    b: int


@dataclass(frozen=True)
class CallSettings:
    # Advertised SIP "ip:port" per transport ("UDP", "TCP", "TLS"), for Via and Contact.
    local_hosts: tuple[tuple[str, str], ...]
    media_address: str  # advertised relay address for SDP
    user_agent: str = "Seabridge"
    ring_timeout: float = 60.0
    cancel_grace: float = 32.0
    # B-leg Call-IDs hash to the worker that owns the call (several SIP workers).
    shard: Shard = Shard()

    def host_for(self, transport: str) -> str:
        for name, host in self.local_hosts:
            if name == transport:
                return host
        return self.local_hosts[0][1]

    def contact(self, user: str, transport: str) -> str:
        return f"sip:{user}@{self.host_for(transport)}{uri_transport_param(transport)}"


class Phase(enum.Enum):
    CALLING = "calling"
    ANSWERED = "answered"  # 200 sent to A, waiting for its ACK
    CONFIRMED = "confirmed"
    ENDED = "ended"


@dataclass
class _Fork:
    key: TxKey
    invite: Request
    destination: Peer
    target: ForkTarget
    provisional: bool = False  # any 1xx (CANCEL may be sent)
    ringing: bool = False  # a 180/183 relayed to the caller
    auth_tries: int = 0
    final: int | None = None
    cancel_wanted: bool = False
    cancel_sent: bool = False
    give_up_at: float | None = None


@dataclass
class _Relay:
    """An in-dialog request from one leg forwarded to the other, awaiting its response."""

    server_key: TxKey
    from_leg: Leg
    request: Request


_NULL_UUID = "0" * 32


@dataclass(eq=False)  # a call is an identity, not a value: it keys the service's indexes
class Call:
    session_id: str
    caller: Party
    callee: Party
    invite: Request  # the A leg's INVITE as received (Via stamped)
    invite_key: TxKey
    source: Peer  # where the caller's INVITE came from
    settings: CallSettings
    started: float
    caller_uuid: str = _NULL_UUID
    phase: Phase = Phase.CALLING
    answered_at: float | None = None
    ended_at: float | None = None
    codec: str = ""
    a: Dialog | None = None
    b: Dialog | None = None
    forks: dict[TxKey, _Fork] = field(default_factory=dict)
    streams: tuple[StreamPorts, ...] = ()
    b_call_id: str = ""
    b_from_tag: str = ""
    a_sdp_version: int = 1
    b_sdp_version: int = 1
    ring_deadline: float | None = None
    hangup_deadline: float | None = None
    relays: dict[TxKey, _Relay] = field(default_factory=dict)
    # The telephone-event payload type each leg's SDP asked for (where INFO digits can go).
    event_payload: dict[str, int] = field(default_factory=dict)
    # Responses to the caller we hold until the record is durable.
    _a_final_sent: bool = False

    # --- start -------------------------------------------------------------------

    def start(self, targets: list[ForkTarget], streams: list[StreamPorts], now: float) -> list[Action]:
        """Fork the INVITE to every target; ``streams`` are the relay ports, one per m= line."""
        self.streams = tuple(streams)
        a_tag = new_tag()
        self.a = Dialog(
            call_id=self.invite.call_id,
            local_tag=a_tag,
            local_uri=_without_tag(self.invite.to),
            remote_uri=_without_tag(self.invite.from_),
            local_contact=parse_uri(self.settings.contact(self.callee.user, self.source.transport)),
            local_cseq=0,
            remote_target=self.invite.contacts[0].uri if self.invite.contacts else self.invite.from_.uri,
            destination=self.source,
            local_host=self.settings.host_for(self.source.transport),
            remote_tag=self.invite.from_.tag or "",
            remote_cseq=self.invite.cseq.number,
            route_set=tuple(self.invite.headers.get_all("Record-Route")),
        )
        actions: list[Action] = []
        try:
            offer = parse_sdp(_sdp_body(self.invite))
        except SdpError:
            return self._end_now("failed", 488, "system", now)
        actions.append(MediaRemoteChanged("a", tuple(media_endpoints(offer))))
        self._note_events("a", offer)
        b_offer = anchor(offer, self.settings.media_address, [s.b for s in streams], self.b_sdp_version)
        self.b_call_id = self.settings.shard.new_call_id(self.settings.media_address)
        self.b_from_tag = new_tag()
        for target in targets:
            invite = self._b_invite(target, bytes(b_offer))
            fork = _Fork(client_key(invite.top_via.branch or "", "INVITE"), invite, target.destination, target)
            self.forks[fork.key] = fork
            actions.append(SendRequest(invite, target.destination, target.timers))
        self.ring_deadline = now + self.settings.ring_timeout
        return actions

    def _b_invite(
        self, target: ForkTarget, sdp: bytes, cseq: int = 1, authorization: tuple[str, str] | None = None
    ) -> Request:
        caller = self.caller
        name = caller.display or ((caller.number or caller.user) if target.from_uri else "")
        display = f'"{name}" ' if name else ""
        max_forwards = int(self.invite.headers.get("Max-Forwards") or "70") - 1
        transport = target.destination.transport
        from_uri = target.from_uri or f"sip:{caller.user}@{caller.tenant}"
        to_uri = target.to_uri or f"sip:{self.callee.user}@{self.callee.tenant}"
        pairs: list[tuple[str, str]] = [
            ("Via", via_header(transport, self.settings.host_for(transport))),
            ("Max-Forwards", str(max_forwards)),
            ("From", f"{display}<{from_uri}>;tag={self.b_from_tag}"),
            ("To", f"<{to_uri}>"),
            ("Call-ID", self.b_call_id),
            ("CSeq", f"{cseq} INVITE"),
            ("Contact", f"<{self.settings.contact(caller.user, transport)}>"),
            ("Session-ID", f"{self.session_id};remote={_NULL_UUID}"),
            ("User-Agent", self.settings.user_agent),
            ("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"),
            ("Content-Type", "application/sdp"),
        ]
        if authorization is not None:
            pairs.append(authorization)
        return Request(headers=Headers(tuple(pairs)), body=sdp, method="INVITE", uri=parse_uri(target.contact))

    # --- responses from B-leg forks ------------------------------------------------------

    def on_response(self, key: TxKey, response: Response, now: float) -> list[Action]:
        if key in self.relays:
            return self._relay_response(key, response, now)
        fork = self.forks.get(key)
        if fork is None or key[2] != "INVITE":  # (branch, sent-by, method, server?)
            return []  # responses to our BYE/CANCEL need nothing more
        if response.status < 200:
            return self._fork_provisional(fork, response, now)
        if response.status < 300:
            return self._fork_answered(fork, response, now)
        if response.status in (401, 407) and fork.target.credentials is not None and fork.auth_tries < 1:
            retry = self._authenticated_retry(fork, response)
            if retry is not None:
                return [retry]
        return self._fork_failed(fork, response.status, now)

    def _authenticated_retry(self, fork: _Fork, challenge: Response) -> SendRequest | None:
        """Answer a trunk's challenge: the same INVITE, next CSeq, new branch, with credentials."""
        assert fork.target.credentials is not None
        if self.phase is not Phase.CALLING or fork.cancel_wanted:
            return None
        auth = authorization_for(challenge, fork.target.credentials, "INVITE", str(fork.invite.uri))
        if auth is None:
            return None
        invite = self._b_invite(fork.target, fork.invite.body, fork.invite.cseq.number + 1, auth)
        del self.forks[fork.key]
        fork.auth_tries += 1
        fork.invite = invite
        fork.key = client_key(invite.top_via.branch or "", "INVITE")
        fork.provisional = False
        self.forks[fork.key] = fork
        return SendRequest(invite, fork.destination, fork.target.timers)

    def _fork_provisional(self, fork: _Fork, response: Response, now: float) -> list[Action]:
        actions: list[Action] = []
        fork.provisional = True
        if fork.cancel_wanted and not fork.cancel_sent:
            actions += self._send_cancel(fork, now)
        if response.status == 100 or self.phase is not Phase.CALLING or fork.cancel_wanted:
            return actions
        body = b""
        extra: list[tuple[str, str]] = []
        if _sdp_body(response):
            try:
                sdp = parse_sdp(_sdp_body(response))
            except SdpError:
                return actions
            actions.append(MediaRemoteChanged("b", tuple(media_endpoints(sdp))))
            body = bytes(self._anchor_for_a(sdp))
            extra.append(("Content-Type", "application/sdp"))
        elif fork.ringing:
            return actions  # repeated ringing from one phone: the caller already knows
        fork.ringing = True
        actions.append(SendResponse(self.invite_key, self._a_response(response.status, response.reason, extra, body)))
        return actions

    def _fork_answered(self, fork: _Fork, response: Response, now: float) -> list[Action]:
        fork.final = response.status
        to_tag = response.to.tag or ""
        if self.b is not None or self.phase is Phase.ENDED:
            if self.b is not None and self.b.remote_tag == to_tag and self.b.call_id == response.call_id:
                # A retransmitted 2xx from the winner: our ACK was lost, send it again.
                return [SendAck(self.b.make_ack(fork.invite.cseq.number), self.b.destination)]
            # Another phone answered too late (or after the caller gave up): ACK and hang up.
            late = self._dialog_for_fork(fork, response)
            return [
                SendAck(late.make_ack(fork.invite.cseq.number), late.destination),
                SendRequest(late.make_request("BYE"), late.destination, fork.target.timers),
            ]
        self.b = self._dialog_for_fork(fork, response)
        actions: list[Action] = [SendAck(self.b.make_ack(fork.invite.cseq.number), self.b.destination)]
        for other in self.forks.values():
            if other is not fork and other.final is None:
                actions += self._cancel_fork(other, now)
        try:
            answer = parse_sdp(_sdp_body(response))
        except SdpError:
            actions.append(SendRequest(self.b.make_request("BYE"), self.b.destination))
            self.ring_deadline = None
            return actions + self._end_now("failed", 488, "system", now)
        actions.append(MediaRemoteChanged("b", tuple(media_endpoints(answer))))
        self._note_events("b", answer)
        self.codec = first_codec(answer)
        body = bytes(self._anchor_for_a(answer))
        ok = self._a_response(200, "OK", [("Content-Type", "application/sdp")], body)
        self.phase = Phase.ANSWERED
        self.answered_at = now
        self.ring_deadline = None
        self._a_final_sent = True
        actions += [SendResponse(self.invite_key, ok), CallAnswered(self.codec)]
        return actions

    def _fork_failed(self, fork: _Fork, status: int, now: float) -> list[Action]:
        fork.final = status
        fork.give_up_at = None
        if self.phase is not Phase.CALLING or any(f.final is None for f in self.forks.values()):
            return []
        return self._all_forks_failed(now)

    def _all_forks_failed(self, now: float) -> list[Action]:
        statuses = [f.final or 480 for f in self.forks.values()]
        status = choose_failure(statuses)
        disposition: Literal["busy", "rejected", "no_answer"]
        if status in (486, 600):
            disposition = "busy"
        elif status == 480:
            disposition = "no_answer"
        else:
            disposition = "rejected"
        return self._end_now(disposition, status, "callee", now)

    def _dialog_for_fork(self, fork: _Fork, response: Response) -> Dialog:
        contacts = response.contacts
        target = contacts[0].uri if contacts else fork.invite.uri
        rr = response.headers.get_all("Record-Route")
        return Dialog(
            call_id=self.b_call_id,
            local_tag=self.b_from_tag,
            local_uri=_without_tag(fork.invite.from_),
            remote_uri=_without_tag(fork.invite.to),
            local_contact=parse_uri(self.settings.contact(self.caller.user, fork.destination.transport)),
            local_cseq=fork.invite.cseq.number,
            remote_target=target,
            destination=fork.destination,
            local_host=self.settings.host_for(fork.destination.transport),
            remote_tag=response.to.tag or "",
            route_set=tuple(reversed(rr)),
        )

    def on_timeout(self, key: TxKey, now: float) -> list[Action]:
        """A client transaction got no answer, or the caller never ACKed our 2xx."""
        if key == self.invite_key:
            if self.phase is Phase.ANSWERED:
                return self.hangup("system", now)
            return []
        relay = self.relays.pop(key, None)
        if relay is not None:
            return [SendResponse(relay.server_key, make_response(relay.request, 408))]
        fork = self.forks.get(key)
        if fork is not None and fork.final is None:
            return self._fork_failed(fork, 408, now)
        return []

    # --- the caller cancels ------------------------------------------------------------

    def on_cancel(self, now: float) -> list[Action]:
        if self.phase is not Phase.CALLING:
            return []
        actions: list[Action] = []
        for fork in self.forks.values():
            if fork.final is None:
                actions += self._cancel_fork(fork, now)
        return actions + self._end_now("cancelled", 487, "caller", now)

    def _cancel_fork(self, fork: _Fork, now: float) -> list[Action]:
        fork.cancel_wanted = True
        fork.give_up_at = now + self.settings.cancel_grace
        if fork.provisional and not fork.cancel_sent:
            return self._send_cancel(fork, now)
        return []  # RFC 3261 section 9.1: wait for a provisional response before CANCEL

    def _send_cancel(self, fork: _Fork, now: float) -> list[Action]:
        fork.cancel_sent = True
        inv = fork.invite
        pairs = [
            ("Via", inv.headers.get("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", inv.headers.get("From") or ""),
            ("To", inv.headers.get("To") or ""),
            ("Call-ID", inv.call_id),
            ("CSeq", f"{inv.cseq.number} CANCEL"),
        ]
        cancel = Request(headers=Headers(tuple(pairs)), method="CANCEL", uri=inv.uri)
        return [SendRequest(cancel, fork.destination)]

    # --- requests inside the dialogs ------------------------------------------------------

    def leg_of(self, call_id: str, our_tag: str) -> Leg | None:
        if self.a is not None and (call_id, our_tag) == self.a.id:
            return "a"
        if self.b is not None and (call_id, our_tag) == self.b.id:
            return "b"
        return None

    def on_ack(self, leg: Leg, now: float) -> list[Action]:
        if leg == "a" and self.phase is Phase.ANSWERED:
            self.phase = Phase.CONFIRMED
        return []

    def on_request(self, leg: Leg, key: TxKey, request: Request, now: float) -> list[Action]:
        dialog = self.a if leg == "a" else self.b
        assert dialog is not None
        try:
            dialog.check_remote_cseq(request)
        except SipProtocolError as exc:
            return [SendResponse(key, make_response(request, exc.status))]
        if request.method == "BYE":
            ended_by: EndedBy = "caller" if leg == "a" else "callee"
            return self._bye_from(leg, key, request, ended_by, now)
        if request.method == "OPTIONS":
            return [SendResponse(key, make_response(request, 200, extra=self._allow()))]
        if self.phase is Phase.ENDED or self.b is None:
            return [SendResponse(key, make_response(request, 481))]
        if request.method == "INFO":
            converted = self._info_to_rfc4733(leg, key, request)
            if converted is not None:
                return converted
        return self._relay_request(leg, key, request)

    def _info_to_rfc4733(self, leg: Leg, key: TxKey, request: Request) -> list[Action] | None:
        """A key press sent as SIP INFO, played to the other phone as RFC 4733 when it takes those."""
        pressed = info_digit(request.headers.get("Content-Type") or "", request.body)
        other: Leg = "b" if leg == "a" else "a"
        payload = self.event_payload.get(other)
        if pressed is None or payload is None:
            return None  # not a digit, or the other phone only understands INFO: relay it as is
        digit, duration_ms = pressed
        return [SendResponse(key, make_response(request, 200)), DtmfToSend(other, digit, duration_ms, payload)]

    def _note_events(self, leg: Leg, sdp: SessionDescription) -> None:
        payload = telephone_event_payload(sdp)
        if payload is None:
            self.event_payload.pop(leg, None)
        else:
            self.event_payload[leg] = payload

    def _bye_from(self, leg: Leg, key: TxKey, request: Request, ended_by: EndedBy, now: float) -> list[Action]:
        ok = SendResponse(key, make_response(request, 200))
        if self.phase is Phase.ENDED:
            return [ok]
        other = self.b if leg == "a" else self.a
        actions: list[Action] = []
        if other is not None:
            actions.append(SendRequest(other.make_request("BYE"), other.destination))
        for relay_key, relay in list(self.relays.items()):
            actions.append(SendResponse(relay.server_key, make_response(relay.request, 487)))
            del self.relays[relay_key]
        self.phase = Phase.ENDED
        self.ended_at = now
        return actions + [CallEnded("answered", 200, ended_by, then_send=(ok,))]

    def _relay_request(self, leg: Leg, key: TxKey, request: Request) -> list[Action]:
        """Forward an in-dialog request (re-INVITE, UPDATE, INFO ...) to the other leg."""
        other = self.b if leg == "a" else self.a
        assert other is not None
        extra: list[tuple[str, str]] = []
        body = request.body
        actions: list[Action] = []
        if _sdp_body(request):
            try:
                sdp = parse_sdp(_sdp_body(request))
            except SdpError as exc:
                return [SendResponse(key, make_response(request, exc.status))]
            actions.append(MediaRemoteChanged(leg, tuple(media_endpoints(sdp))))
            self._note_events(leg, sdp)
            body = bytes(self._anchor_for_a(sdp) if leg == "b" else self._anchor_for_b(sdp))
            extra.append(("Content-Type", "application/sdp"))
        for name in ("Content-Type", "Event", "Subscription-State", "Session-Expires", "Reason"):
            value = request.headers.get(name)
            if value is not None and not (name == "Content-Type" and extra):
                extra.append((name, value))
        forwarded = other.make_request(request.method, tuple(extra))
        forwarded = Request(headers=forwarded.headers, body=body, method=forwarded.method, uri=forwarded.uri)
        send = SendRequest(forwarded, other.destination)
        self.relays[send.key] = _Relay(key, leg, request)
        return actions + [send]

    def _relay_response(self, key: TxKey, response: Response, now: float) -> list[Action]:
        relay = self.relays[key]
        if response.status == 100:
            return []
        if response.status >= 200:
            del self.relays[key]
        answering_leg: Leg = "b" if relay.from_leg == "a" else "a"
        actions: list[Action] = []
        body = response.body
        extra: list[tuple[str, str]] = []
        if _sdp_body(response):
            try:
                sdp = parse_sdp(_sdp_body(response))
            except SdpError:
                sdp = None
            if sdp is not None:
                actions.append(MediaRemoteChanged(answering_leg, tuple(media_endpoints(sdp))))
                self._note_events(answering_leg, sdp)
                to_asker = self._anchor_for_a(sdp) if relay.from_leg == "a" else self._anchor_for_b(sdp)
                body = bytes(to_asker)
                extra.append(("Content-Type", "application/sdp"))
        asker = self.a if relay.from_leg == "a" else self.b
        assert asker is not None
        if relay.request.method == "INVITE" and response.is_success:
            # We ACK the re-INVITE's 2xx on the answering leg ourselves; the asker ACKs ours.
            answering = self.b if relay.from_leg == "a" else self.a
            assert answering is not None
            cseq = response.cseq.number
            actions.append(SendAck(answering.make_ack(cseq), answering.destination))
            extra.append(("Contact", f"<{asker.local_contact}>"))
        out = make_response(relay.request, response.status, response.reason, extra=extra, body=body)
        actions.append(SendResponse(relay.server_key, out))
        return actions

    # --- ending ------------------------------------------------------------------------

    def hangup(self, by: EndedBy, now: float, status: int = 480) -> list[Action]:
        """End the call from our side (shutdown, media timeout, credit exhausted, max duration)."""
        if self.phase is Phase.ENDED:
            return []
        if self.phase is Phase.CALLING:
            actions: list[Action] = []
            for fork in self.forks.values():
                if fork.final is None:
                    actions += self._cancel_fork(fork, now)
            return actions + self._end_now("no_answer" if status == 480 else "failed", status, by, now)
        actions = []
        for dialog in (self.a, self.b):
            if dialog is not None:
                actions.append(SendRequest(dialog.make_request("BYE"), dialog.destination))
        self.phase = Phase.ENDED
        self.ended_at = now
        return actions + [CallEnded("answered", 200, by)]

    def _end_now(
        self,
        disposition: Literal["answered", "no_answer", "busy", "failed", "cancelled", "rejected"],
        status: int,
        by: EndedBy,
        now: float,
    ) -> list[Action]:
        self.phase = Phase.ENDED
        self.ended_at = now
        self.ring_deadline = None
        then: tuple[SendResponse, ...] = ()
        if not self._a_final_sent:
            self._a_final_sent = True
            then = (SendResponse(self.invite_key, self._a_response(status, None, [], b"")),)
        return [CallEnded(disposition, status, by, then_send=then)]

    # --- timers ------------------------------------------------------------------------

    def next_deadline(self) -> float | None:
        # Loops, not comprehensions (each a call of its own on 3.11): read after every action.
        earliest = self.ring_deadline
        hangup = self.hangup_deadline
        if hangup is not None and (earliest is None or hangup < earliest):
            earliest = hangup
        for fork in self.forks.values():
            give_up = fork.give_up_at
            if give_up is not None and fork.final is None and (earliest is None or give_up < earliest):
                earliest = give_up
        return earliest

    def on_timer(self, now: float) -> list[Action]:
        actions: list[Action] = []
        if self.ring_deadline is not None and now >= self.ring_deadline:
            self.ring_deadline = None
            actions += self.hangup("system", now, status=480)
        if self.hangup_deadline is not None and now >= self.hangup_deadline:
            self.hangup_deadline = None
            actions += self.hangup("system", now)
        for fork in self.forks.values():
            if fork.final is None and fork.give_up_at is not None and now >= fork.give_up_at:
                fork.final = 408  # it never answered our CANCEL; forget it
                fork.give_up_at = None
        return actions

    @property
    def finished(self) -> bool:
        """Nothing more will happen: ended, and no fork or relayed request outstanding."""
        return self.phase is Phase.ENDED and all(f.final is not None for f in self.forks.values()) and not self.relays

    # --- helpers ------------------------------------------------------------------------

    def _anchor_for_a(self, sdp_from_b: SessionDescription) -> SessionDescription:
        self.a_sdp_version += 1
        ports = _ports_for(sdp_from_b, [s.a for s in self.streams])
        return anchor(sdp_from_b, self.settings.media_address, ports, self.a_sdp_version)

    def _anchor_for_b(self, sdp_from_a: SessionDescription) -> SessionDescription:
        self.b_sdp_version += 1
        ports = _ports_for(sdp_from_a, [s.b for s in self.streams])
        return anchor(sdp_from_a, self.settings.media_address, ports, self.b_sdp_version)

    def _a_response(self, status: int, reason: str | None, extra: list[tuple[str, str]], body: bytes) -> Response:
        assert self.a is not None
        headers = list(extra)
        if status < 300 and status != 100:
            headers.append(("Contact", f"<{self.a.local_contact}>"))
        headers += [
            ("Session-ID", f"{self.session_id};remote={self.caller_uuid}"),
            ("Server", self.settings.user_agent),
        ]
        if 200 <= status < 300:
            headers += self._allow()
        return make_response(self.invite, status, reason, to_tag=self.a.local_tag, extra=headers, body=body)

    @staticmethod
    def _allow() -> list[tuple[str, str]]:
        return [("Allow", "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE")]


def _ports_for(sdp: SessionDescription, ports: list[int]) -> list[int]:
    # Streams beyond those we relay are refused (port 0) rather than sent around the anchor.
    return [ports[i] if i < len(ports) else 0 for i in range(len(sdp.media))]


def _sdp_body(message: Request | Response) -> bytes:
    return sdp_of(message.headers.get("Content-Type") or "", message.body) or b""


def _without_tag(na: NameAddr) -> NameAddr:
    return NameAddr(na.uri, na.display, tuple((k, v) for k, v in na.params if k.lower() != "tag"))


def choose_failure(statuses: list[int]) -> int:
    """The one failure to tell the caller when every fork failed (after RFC 3261 section 16.7)."""
    six = [s for s in statuses if s >= 600]
    if six:
        return six[0]
    if 486 in statuses:
        return 486
    meaningful = [s for s in statuses if s not in (408, 480, 487, 503) and 400 <= s < 500]
    if meaningful:
        return meaningful[0]
    return 480


def new_session_id() -> str:
    """A fresh RFC 7989 UUID (version 4, random) for a call that came without one."""
    return uuid.UUID(bytes=token_bytes(16), version=4).hex


def parse_session_id(value: str | None) -> str | None:
    """The sender's UUID from an RFC 7989 Session-ID header, if it is a real one."""
    if not value:
        return None
    uuid = value.split(";")[0].strip().lower()
    if len(uuid) == 32 and all(c in "0123456789abcdef" for c in uuid) and uuid != _NULL_UUID:
        return uuid
    return None


__all__ = [
    "Action",
    "Call",
    "CallAnswered",
    "CallEnded",
    "CallSettings",
    "DtmfToSend",
    "ForkTarget",
    "MediaRemoteChanged",
    "Party",
    "Phase",
    "SendAck",
    "SendRequest",
    "SendResponse",
    "StreamPorts",
    "choose_failure",
    "new_session_id",
    "parse_session_id",
]
