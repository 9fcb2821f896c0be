"""The browser sessions' SIP user agent, sans-I/O.

Every signed-in browser is one registration of its user with the gateway's
own SIP service, and every browser call is one SIP dialog with it: the
service's B2BUA then forks, refuses cross-tenant calls and writes the call
record as for any phone. This core speaks to a single peer (the service) and
is driven like the transaction layer below it: API calls, ``receive(data,
source, now)`` and ``handle_timers(now)``; it queues datagrams for
``take_outgoing()`` and reports ``next_deadline()``. Each API call and input
returns the events it caused.

Credentials come from the user's stored HA1 (``sip_auth``); the last
challenge is reused with a growing nonce count, so a refresh or a call
usually costs one round trip, not two, on a slow link.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

from gateway.sip.dialog import Dialog, new_branch, new_call_id, new_tag
from gateway.sip.errors import SipError
from gateway.sip.headers import NameAddr, parse_name_addr
from gateway.sip.message import Headers, Request, Response, make_response
from gateway.sip.parser import parse_message
from gateway.sip.peer import Peer
from gateway.sip.transaction import (
    AckReceived,
    RequestReceived,
    ResponseReceived,
    TimerConfig,
    TransactionLayer,
    TransactionTimedOut,
    TxKey,
)
from gateway.sip.uri import parse_uri
from gateway.webrtc.sip_auth import Challenge, authorization, pick_challenge

Addr = tuple[str, int]
ALLOW = "INVITE, ACK, CANCEL, BYE, OPTIONS, INFO, UPDATE"
EndedBy = Literal["local", "remote"]


# --- inputs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Account:
    """Who a registration or call is for: a user of a tenant, with the HA1 per digest algorithm."""

    username: str
    tenant: str
    ha1s: Mapping[str, str]
    display: str = ""

    @property
    def address(self) -> str:
        return f"{self.username}@{self.tenant}"


@dataclass(frozen=True)
class AgentSettings:
    local_host: str  # "ip:port" we put in Via and Contact
    service: Addr  # the gateway's SIP service: every request goes there
    user_agent: str = "Seabridge-WebRTC"
    timers: TimerConfig = field(default_factory=TimerConfig)
    register_expires: int = 300
    retry_after: float = 30.0  # after a failed registration


# --- events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RegistrationSucceeded:
    binding: str
    expires: int


@dataclass(frozen=True)
class RegistrationFailed:
    binding: str
    status: int


@dataclass(frozen=True)
class Unregistered:
    binding: str


@dataclass(frozen=True)
class CallRinging:
    call: str
    status: int


@dataclass(frozen=True)
class CallAnswered:
    call: str
    sdp: bytes


@dataclass(frozen=True)
class CallFailed:
    call: str
    status: int
    reason: str


@dataclass(frozen=True)
class IncomingCallReceived:
    call: str
    binding: str
    caller: str  # user@tenant
    caller_display: str
    sdp: bytes
    session_id: str


@dataclass(frozen=True)
class CallConfirmed:
    call: str


@dataclass(frozen=True)
class CallEnded:
    call: str
    by: EndedBy
    status: int


@dataclass(frozen=True)
class OfferReceived:
    """The far end re-offered (hold, resume): answer with ``UserAgent.answer_offer``."""

    call: str
    sdp: bytes


@dataclass(frozen=True)
class OfferAnswered:
    call: str
    sdp: bytes


@dataclass(frozen=True)
class OfferRefused:
    call: str
    status: int


Event = (
    RegistrationSucceeded
    | RegistrationFailed
    | Unregistered
    | CallRinging
    | CallAnswered
    | CallFailed
    | IncomingCallReceived
    | CallConfirmed
    | CallEnded
    | OfferReceived
    | OfferAnswered
    | OfferRefused
)


# --- state -------------------------------------------------------------------------------


@dataclass
class _Registration:
    binding: str
    account: Account
    contact_user: str
    call_id: str
    from_tag: str
    cseq: int = 0
    expires: int = 0
    key: TxKey | None = None
    fresh_challenge: bool = False  # the request in flight answers a challenge we just got
    deadline: float | None = None  # refresh or retry
    removing: bool = False


CallState = Literal["calling", "ringing", "answered", "confirmed", "ended"]


@dataclass
class _Call:
    ref: str
    outgoing: bool
    account: Account
    binding: str
    contact_user: str
    invite: Request
    invite_key: TxKey
    state: CallState = "calling"
    dialog: Dialog | None = None
    provisional: bool = False
    cancel_wanted: bool = False
    fresh_challenge: bool = False
    reported: set[int] = field(default_factory=set)
    local_tag: str = ""
    remote_offer: TxKey | None = None  # a re-INVITE from the far end awaiting our answer
    local_offer: TxKey | None = None  # our re-INVITE awaiting its answer
    session_id: str = ""


class UserAgent:
    def __init__(self, settings: AgentSettings) -> None:
        self.settings = settings
        self._txn = TransactionLayer(settings.timers)
        # The transaction layer speaks Peers; the agent only ever talks UDP to its own gateway.
        self._service = Peer(settings.service[0], settings.service[1], "UDP")
        self._registrations: dict[str, _Registration] = {}
        self._by_contact: dict[str, str] = {}  # contact user -> binding
        self._reg_keys: dict[TxKey, str] = {}
        self._calls: dict[str, _Call] = {}
        self._call_keys: dict[TxKey, str] = {}
        self._dialogs: dict[tuple[str, str], str] = {}  # (Call-ID, our tag) -> call ref
        self._challenges: dict[str, Challenge] = {}  # per account address

    # --- introspection ---------------------------------------------------------------------

    def take_outgoing(self) -> list[tuple[bytes, Addr]]:
        return [(data, (peer.host, peer.port)) for data, peer in self._txn.take_outgoing()]

    def next_deadline(self) -> float | None:
        deadlines = [d for d in (self._txn.next_deadline(),) if d is not None]
        deadlines += [r.deadline for r in self._registrations.values() if r.deadline is not None]
        return min(deadlines) if deadlines else None

    def is_registered(self, binding: str) -> bool:
        reg = self._registrations.get(binding)
        return reg is not None and reg.expires > 0 and not reg.removing

    @property
    def calls(self) -> int:
        return len(self._calls)

    def session_id(self, call: str) -> str:
        return self._calls[call].session_id if call in self._calls else ""

    # --- registrations -------------------------------------------------------------------------

    def register(self, binding: str, account: Account, contact_user: str, now: float) -> list[Event]:
        if binding in self._registrations:
            raise ValueError(f"binding {binding} already exists")
        host = self.settings.local_host.rsplit(":", 1)[0]
        reg = _Registration(binding, account, contact_user, new_call_id(host), new_tag())
        self._registrations[binding] = reg
        self._by_contact[contact_user] = binding
        self._send_register(reg, self.settings.register_expires, now)
        return []

    def unregister(self, binding: str, now: float) -> list[Event]:
        reg = self._registrations.get(binding)
        if reg is None:
            return []
        reg.removing = True
        reg.deadline = None
        self._send_register(reg, 0, now)
        return []

    def _send_register(self, reg: _Registration, expires: int, now: float, fresh: bool = False) -> None:
        if reg.key is not None:
            self._reg_keys.pop(reg.key, None)
        reg.cseq += 1
        account = reg.account
        uri = f"sip:{account.tenant}"
        aor = f"<sip:{account.username}@{account.tenant}>"
        pairs = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"{aor};tag={reg.from_tag}"),
            ("To", aor),
            ("Call-ID", reg.call_id),
            ("CSeq", f"{reg.cseq} REGISTER"),
            ("Contact", f"<sip:{reg.contact_user}@{self.settings.local_host}>"),
            ("Expires", str(expires)),
            ("User-Agent", self.settings.user_agent),
        ]
        pairs += self._credentials(account, "Authorization", "REGISTER", uri)
        request = Request(headers=Headers(tuple(pairs)), method="REGISTER", uri=parse_uri(uri))
        reg.key = self._txn.send_request(request, self._service, now)
        reg.fresh_challenge = fresh
        self._reg_keys[reg.key] = reg.binding

    def _on_register_response(self, reg: _Registration, response: Response, now: float) -> list[Event]:
        if response.status < 200:
            return []
        reg.key = None
        requested = 0 if reg.removing else self.settings.register_expires
        if response.status in (401, 407):
            if self._take_challenge(reg.account, response, reg.fresh_challenge):
                self._send_register(reg, requested, now, fresh=True)
                return []
        elif response.status == 423 and not reg.removing:
            minimum = response.headers.get("Min-Expires") or ""
            if minimum.isdigit() and int(minimum) > self.settings.register_expires:
                self.settings = _with_expires(self.settings, int(minimum))
                self._send_register(reg, int(minimum), now)
                return []
        if reg.removing:
            self._forget_registration(reg)
            return [Unregistered(reg.binding)]
        if not response.is_success:
            reg.expires = 0
            reg.deadline = now + self.settings.retry_after
            return [RegistrationFailed(reg.binding, response.status)]
        granted = _granted_expiry(response, reg.contact_user, requested)
        reg.expires = granted
        # Refresh at half the granted time: a lost refresh still leaves time for a retransmitted one.
        reg.deadline = now + max(1.0, granted / 2)
        return [RegistrationSucceeded(reg.binding, granted)]

    def _forget_registration(self, reg: _Registration) -> None:
        self._registrations.pop(reg.binding, None)
        if self._by_contact.get(reg.contact_user) == reg.binding:
            del self._by_contact[reg.contact_user]

    # --- outgoing calls ------------------------------------------------------------------------

    def invite(
        self, ref: str, binding: str, target: str, sdp: bytes, now: float, session_id: str | None = None
    ) -> list[Event]:
        """Call ``target`` (``user`` or ``user@tenant``) as the user of registration ``binding``."""
        reg = self._registrations[binding]
        account = reg.account
        user, _, domain = target.partition("@")
        target_uri = parse_uri(f"sip:{user}@{domain or account.tenant}")
        host = self.settings.local_host.rsplit(":", 1)[0]
        display = f'"{account.display}" ' if account.display else ""
        session = session_id or uuid.uuid4().hex
        pairs = [
            ("Via", self._via()),
            ("Max-Forwards", "70"),
            ("From", f"{display}<sip:{account.username}@{account.tenant}>;tag={new_tag()}"),
            ("To", f"<{target_uri}>"),
            ("Call-ID", new_call_id(host)),
            ("CSeq", "1 INVITE"),
            ("Contact", f"<sip:{reg.contact_user}@{self.settings.local_host}>"),
            ("Session-ID", f"{session};remote={'0' * 32}"),
            ("User-Agent", self.settings.user_agent),
            ("Allow", ALLOW),
            ("Content-Type", "application/sdp"),
        ]
        request = Request(headers=Headers(tuple(pairs)), body=sdp, method="INVITE", uri=target_uri)
        request = self._with_credentials(request, account, "Proxy-Authorization")
        key = self._txn.send_request(request, self._service, now)
        call = _Call(ref, True, account, binding, reg.contact_user, request, key, session_id=session)
        self._calls[ref] = call
        self._call_keys[key] = ref
        return []

    def _reinvite_with_credentials(self, call: _Call, now: float) -> None:
        old = call.invite
        cseq = old.cseq.number + 1
        headers = old.headers.replaced_first("Via", self._via()).replaced("CSeq", f"{cseq} INVITE")
        headers = headers.without("Proxy-Authorization")
        request = self._with_credentials(old.with_headers(headers), call.account, "Proxy-Authorization")
        call.invite = request
        call.invite_key = self._txn.send_request(request, self._service, now)
        call.fresh_challenge = True
        self._call_keys[call.invite_key] = call.ref

    def _on_invite_response(self, call: _Call, response: Response, now: float) -> list[Event]:
        status = response.status
        if status < 200:
            call.provisional = True
            events: list[Event] = []
            if call.cancel_wanted:
                self._send_cancel(call, now)
                call.cancel_wanted = False
            elif status != 100 and status not in call.reported and call.state != "ended":
                call.reported.add(status)
                call.state = "ringing"
                events.append(CallRinging(call.ref, status))
            return events
        if 200 <= status < 300:
            return self._on_outgoing_answer(call, response, now)
        if status in (401, 407) and call.state != "ended":
            if self._take_challenge(call.account, response, call.fresh_challenge):
                self._reinvite_with_credentials(call, now)
                return []
        if call.state == "ended":
            self._forget_call(call)
            return []
        return self._end(call, CallFailed(call.ref, status, response.reason))

    def _on_outgoing_answer(self, call: _Call, response: Response, now: float) -> list[Event]:
        to_tag = response.to.tag or ""
        if call.dialog is not None:
            if call.dialog.remote_tag == to_tag:
                self._ack(call.dialog, call.invite.cseq.number)  # our ACK was lost: the 2xx came again
            return []
        contacts = response.contacts
        dialog = Dialog(
            call_id=call.invite.call_id,
            local_tag=call.invite.from_.tag or "",
            local_uri=_without_tag(call.invite.from_),
            remote_uri=_without_tag(call.invite.to),
            local_contact=parse_uri(f"sip:{call.contact_user}@{self.settings.local_host}"),
            local_cseq=call.invite.cseq.number,
            remote_target=contacts[0].uri if contacts else call.invite.uri,
            destination=self._service,
            local_host=self.settings.local_host,
            remote_tag=to_tag,
            route_set=tuple(reversed(response.headers.get_all("Record-Route"))),
        )
        call.dialog = dialog
        self._dialogs[dialog.id] = call.ref
        self._ack(dialog, call.invite.cseq.number)
        if call.state == "ended" or call.cancel_wanted:
            # Answered after we gave up (our CANCEL crossed its 2xx): end it properly.
            self._send_in_dialog(call, "BYE", now)
            self._forget_call(call)
            return []
        call.state = "confirmed"
        return [CallAnswered(call.ref, response.body)]

    def _send_cancel(self, call: _Call, now: float) -> None:
        inv = call.invite
        pairs = [
            ("Via", inv.headers.get("Via") or ""),
            ("Max-Forwards", "70"),
            ("From", inv.headers.get("From") or ""),
            ("To", inv.headers.get("To") or ""),
            ("Call-ID", inv.call_id),
            ("CSeq", f"{inv.cseq.number} CANCEL"),
        ]
        cancel = Request(headers=Headers(tuple(pairs)), method="CANCEL", uri=inv.uri)
        self._txn.send_request(cancel, self._service, now)

    # --- incoming calls --------------------------------------------------------------------------

    def _on_new_invite(self, event: RequestReceived, now: float) -> list[Event]:
        request = event.request
        binding = self._by_contact.get(request.uri.user or "")
        reg = self._registrations.get(binding) if binding is not None else None
        if reg is None or reg.removing:
            self._respond(event.key, make_response(request, 404, to_tag=new_tag()), now)
            return []
        ref = "in-" + secrets.token_hex(8)
        caller = request.from_
        session = (request.headers.get("Session-ID") or "").split(";")[0].strip()
        call = _Call(
            ref,
            False,
            reg.account,
            reg.binding,
            reg.contact_user,
            request,
            event.key,
            local_tag=new_tag(),
            session_id=session,
        )
        self._calls[ref] = call
        self._call_keys[event.key] = ref
        display = caller.display.strip().strip('"')
        return [IncomingCallReceived(ref, reg.binding, caller.uri.address, display, request.body, session)]

    def ring(self, ref: str, now: float) -> list[Event]:
        call = self._calls.get(ref)
        if call is None or call.outgoing or call.state != "calling":
            return []
        call.state = "ringing"
        contact = ("Contact", f"<sip:{call.contact_user}@{self.settings.local_host}>")
        self._respond(call.invite_key, make_response(call.invite, 180, to_tag=call.local_tag, extra=[contact]), now)
        return []

    def answer(self, ref: str, sdp: bytes, now: float) -> list[Event]:
        call = self._calls.get(ref)
        if call is None or call.outgoing or call.state not in ("calling", "ringing"):
            return []
        invite = call.invite
        dialog = Dialog(
            call_id=invite.call_id,
            local_tag=call.local_tag,
            local_uri=_without_tag(invite.to),
            remote_uri=_without_tag(invite.from_),
            local_contact=parse_uri(f"sip:{call.contact_user}@{self.settings.local_host}"),
            local_cseq=0,
            remote_target=invite.contacts[0].uri if invite.contacts else invite.from_.uri,
            destination=self._service,
            local_host=self.settings.local_host,
            remote_tag=invite.from_.tag or "",
            remote_cseq=invite.cseq.number,
            route_set=tuple(invite.headers.get_all("Record-Route")),
        )
        call.dialog = dialog
        self._dialogs[dialog.id] = ref
        call.state = "answered"
        extra = [
            ("Contact", f"<{dialog.local_contact}>"),
            ("Allow", ALLOW),
            ("User-Agent", self.settings.user_agent),
            ("Content-Type", "application/sdp"),
        ]
        ok = make_response(invite, 200, to_tag=call.local_tag, extra=extra, body=sdp)
        self._respond(call.invite_key, ok, now)
        return []

    def reject(self, ref: str, status: int, now: float) -> list[Event]:
        call = self._calls.get(ref)
        if call is None or call.outgoing or call.state not in ("calling", "ringing"):
            return []
        self._respond(call.invite_key, make_response(call.invite, status, to_tag=call.local_tag), now)
        return self._end(call, CallEnded(ref, "local", status))

    # --- both directions ---------------------------------------------------------------------------

    def hangup(self, ref: str, now: float) -> list[Event]:
        """End the call whatever its state: CANCEL, reject or BYE, as the state requires."""
        call = self._calls.get(ref)
        if call is None or call.state == "ended":
            return []
        if not call.outgoing and call.state in ("calling", "ringing"):
            return self.reject(ref, 603, now)
        if call.dialog is None:
            # An outgoing call not answered yet: CANCEL (once a provisional response allows it).
            if call.provisional:
                self._send_cancel(call, now)
            else:
                call.cancel_wanted = True
            call.state = "ended"
            return [CallEnded(ref, "local", 487)]
        self._send_in_dialog(call, "BYE", now)
        return self._end(call, CallEnded(ref, "local", 200))

    def reoffer(self, ref: str, sdp: bytes, now: float) -> list[Event]:
        """Send a re-INVITE (hold, resume) in an established call."""
        call = self._calls.get(ref)
        if call is None or call.dialog is None or call.state not in ("answered", "confirmed"):
            return []
        if call.local_offer is not None or call.remote_offer is not None:
            return [OfferRefused(ref, 491)]
        extra = (("Content-Type", "application/sdp"), ("User-Agent", self.settings.user_agent))
        request = call.dialog.make_request("INVITE", extra)
        request = Request(headers=request.headers, body=sdp, method="INVITE", uri=request.uri)
        key = self._txn.send_request(request, self._service, now)
        call.local_offer = key
        self._call_keys[key] = ref
        return []

    def answer_offer(self, ref: str, sdp: bytes, now: float) -> list[Event]:
        call = self._calls.get(ref)
        if call is None or call.remote_offer is None or call.dialog is None:
            return []
        request = self._txn.request_of(call.remote_offer)
        if request is not None:
            extra = [("Contact", f"<{call.dialog.local_contact}>"), ("Content-Type", "application/sdp")]
            self._respond(call.remote_offer, make_response(request, 200, extra=extra, body=sdp), now)
        call.remote_offer = None
        return []

    def _on_in_dialog(self, call: _Call, event: RequestReceived, now: float) -> list[Event]:
        request = event.request
        assert call.dialog is not None
        if request.method != "ACK" and call.dialog.remote_cseq is not None:
            if request.cseq.number <= call.dialog.remote_cseq:
                self._respond(event.key, make_response(request, 500), now)
                return []
        call.dialog.remote_cseq = request.cseq.number
        if request.method == "BYE":
            self._respond(event.key, make_response(request, 200), now)
            if call.state == "ended":
                return []
            return self._end(call, CallEnded(call.ref, "remote", 200))
        if request.method == "INVITE":
            if call.local_offer is not None or call.remote_offer is not None:
                self._respond(event.key, make_response(request, 491), now)
                return []
            call.remote_offer = event.key
            self._call_keys[event.key] = call.ref
            return [OfferReceived(call.ref, request.body)]
        allow = [("Allow", ALLOW)]
        status = 200 if request.method in ("INFO", "UPDATE", "OPTIONS") else 405
        self._respond(event.key, make_response(request, status, extra=allow if status == 405 else []), now)
        return []

    def _on_reoffer_response(self, call: _Call, response: Response, now: float) -> list[Event]:
        if response.status < 200:
            return []
        call.local_offer = None
        if response.is_success and call.dialog is not None:
            self._ack(call.dialog, response.cseq.number)
            return [OfferAnswered(call.ref, response.body)]
        return [OfferRefused(call.ref, response.status)]

    # --- input -----------------------------------------------------------------------------------

    def receive(self, data: bytes, source: Addr, now: float) -> list[Event]:
        if not data.strip():
            return []
        try:
            message = parse_message(data)
            tx_events = self._txn.receive(message, Peer(source[0], source[1], "UDP"), now)
        except SipError:
            return []
        events: list[Event] = []
        for tx_event in tx_events:
            events += self._dispatch(tx_event, now)
        return events

    def handle_timers(self, now: float) -> list[Event]:
        events: list[Event] = []
        for tx_event in self._txn.handle_timers(now):
            events += self._dispatch(tx_event, now)
        for reg in list(self._registrations.values()):
            if reg.deadline is not None and reg.deadline <= now and reg.key is None:
                reg.deadline = None
                self._send_register(reg, self.settings.register_expires, now)
        return events

    def _dispatch(self, event: object, now: float) -> list[Event]:
        if isinstance(event, ResponseReceived):
            return self._on_response(event.key, event.response, now)
        if isinstance(event, TransactionTimedOut):
            return self._on_timeout(event, now)
        if isinstance(event, AckReceived):
            ref = self._dialogs.get((event.request.call_id, event.request.to.tag or ""))
            call = self._calls.get(ref) if ref is not None else None
            if call is not None and call.state == "answered":
                call.state = "confirmed"
                return [CallConfirmed(call.ref)]
            return []
        if isinstance(event, RequestReceived):
            return self._on_request(event, now)
        return []

    def _on_response(self, key: TxKey, response: Response, now: float) -> list[Event]:
        binding = self._reg_keys.get(key)
        if binding is not None:
            if response.status >= 200:
                del self._reg_keys[key]
            reg = self._registrations.get(binding)
            return self._on_register_response(reg, response, now) if reg is not None else []
        ref = self._call_keys.get(key)
        call = self._calls.get(ref) if ref is not None else None
        if call is None:
            return []
        if key == call.local_offer:
            return self._on_reoffer_response(call, response, now)
        if key == call.invite_key and call.outgoing:
            return self._on_invite_response(call, response, now)
        return []

    def _on_timeout(self, event: TransactionTimedOut, now: float) -> list[Event]:
        binding = self._reg_keys.pop(event.key, None)
        if binding is not None:
            reg = self._registrations.get(binding)
            if reg is None:
                return []
            reg.key = None
            if reg.removing:
                self._forget_registration(reg)
                return [Unregistered(binding)]
            reg.expires = 0
            reg.deadline = now + self.settings.retry_after
            return [RegistrationFailed(binding, 408)]
        ref = self._call_keys.get(event.key)
        call = self._calls.get(ref) if ref is not None else None
        if call is None or call.state == "ended":
            if call is not None and event.key == call.invite_key:
                self._forget_call(call)
            return []
        if event.key == call.local_offer:
            call.local_offer = None
            return [OfferRefused(call.ref, 408)]
        if event.key == call.invite_key:
            if call.outgoing:
                return self._end(call, CallFailed(call.ref, 408, "Request Timeout"))
            if call.state == "answered":  # our 2xx was never ACKed
                self._send_in_dialog(call, "BYE", now)
                return self._end(call, CallEnded(call.ref, "local", 408))
        return []

    def _on_request(self, event: RequestReceived, now: float) -> list[Event]:
        request = event.request
        if request.method == "CANCEL":
            return self._on_cancel(event, now)
        if request.to.tag:
            ref = self._dialogs.get((request.call_id, request.to.tag))
            call = self._calls.get(ref) if ref is not None else None
            if call is None or call.dialog is None:
                self._respond(event.key, make_response(request, 481), now)
                return []
            return self._on_in_dialog(call, event, now)
        if request.method == "INVITE":
            return self._on_new_invite(event, now)
        if request.method == "OPTIONS":
            extra = [("Allow", ALLOW), ("Accept", "application/sdp")]
            self._respond(event.key, make_response(request, 200, to_tag=new_tag(), extra=extra), now)
            return []
        status = 481 if request.method in ("BYE", "INFO", "UPDATE") else 405
        self._respond(event.key, make_response(request, status, to_tag=new_tag(), extra=[("Allow", ALLOW)]), now)
        return []

    def _on_cancel(self, event: RequestReceived, now: float) -> list[Event]:
        ref = self._call_keys.get(event.cancels) if event.cancels is not None else None
        call = self._calls.get(ref) if ref is not None else None
        if call is None or call.outgoing:
            self._respond(event.key, make_response(event.request, 481), now)
            return []
        self._respond(event.key, make_response(event.request, 200), now)
        if call.state not in ("calling", "ringing"):
            return []  # already answered: the caller will send BYE
        self._respond(call.invite_key, make_response(call.invite, 487, to_tag=call.local_tag), now)
        return self._end(call, CallEnded(call.ref, "remote", 487))

    # --- helpers ---------------------------------------------------------------------------------

    def _end(self, call: _Call, event: Event) -> list[Event]:
        call.state = "ended"
        self._forget_call(call)
        return [event]

    def _forget_call(self, call: _Call) -> None:
        # Transactions still running (a 2xx awaiting ACK, a BYE) finish in the transaction layer.
        call.state = "ended"
        if call.cancel_wanted:
            return  # keep the call until a provisional response lets us CANCEL, or it answers
        self._calls.pop(call.ref, None)
        for key in [k for k, r in self._call_keys.items() if r == call.ref]:
            del self._call_keys[key]
        if call.dialog is not None:
            self._dialogs.pop(call.dialog.id, None)

    def _send_in_dialog(self, call: _Call, method: str, now: float) -> None:
        assert call.dialog is not None
        extra = (("User-Agent", self.settings.user_agent),)
        request = call.dialog.make_request(method, extra)
        self._txn.send_request(request, self._service, now)

    def _ack(self, dialog: Dialog, cseq: int) -> None:
        self._txn.send_stateless(dialog.make_ack(cseq), self._service)

    def _respond(self, key: TxKey, response: Response, now: float) -> None:
        try:
            self._txn.respond(key, response, now)
        except SipError:
            pass  # the transaction already ended (a late answer to a cancelled call)

    def _via(self) -> str:
        return f"SIP/2.0/UDP {self.settings.local_host};branch={new_branch()};rport"

    def _take_challenge(self, account: Account, response: Response, was_fresh: bool) -> bool:
        """Remember a challenge; False when retrying is pointless (our fresh answer was refused)."""
        challenge = pick_challenge(response, account.ha1s)
        if challenge is None or (was_fresh and not challenge.stale):
            self._challenges.pop(account.address, None)
            return False
        self._challenges[account.address] = challenge
        return True

    def _credentials(self, account: Account, header: str, method: str, uri: str) -> list[tuple[str, str]]:
        challenge = self._challenges.get(account.address)
        if challenge is None:
            return []
        self._challenges[account.address] = challenge.answered()
        value = authorization(challenge, account.username, account.ha1s[challenge.algorithm], method, uri)
        return [(header, value)]

    def _with_credentials(self, request: Request, account: Account, header: str) -> Request:
        creds = self._credentials(account, header, request.method, str(request.uri))
        if not creds:
            return request
        return request.with_headers(request.headers.with_added(header, creds[0][1]))


def _without_tag(na: NameAddr) -> NameAddr:
    return NameAddr(na.uri, na.display, tuple((k, v) for k, v in na.params if k.lower() != "tag"))


def _granted_expiry(response: Response, contact_user: str, requested: int) -> int:
    for value in response.headers.get_all("Contact"):
        try:
            contact = parse_name_addr(value)
        except SipError:
            continue
        if contact.uri.user == contact_user:
            expires = contact.param("expires") or ""
            if expires.isdigit():
                return int(expires)
    header = response.headers.get("Expires") or ""
    return int(header) if header.isdigit() else requested


def _with_expires(settings: AgentSettings, expires: int) -> AgentSettings:
    from dataclasses import replace

    return replace(settings, register_expires=expires)


__all__ = [
    "Account",
    "AgentSettings",
    "CallAnswered",
    "CallConfirmed",
    "CallEnded",
    "CallFailed",
    "CallRinging",
    "Event",
    "IncomingCallReceived",
    "OfferAnswered",
    "OfferReceived",
    "OfferRefused",
    "RegistrationFailed",
    "RegistrationSucceeded",
    "Unregistered",
    "UserAgent",
]
