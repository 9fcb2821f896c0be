"""Dialog-state subscriptions (RFC 6665 notifier for RFC 4235 ``Event: dialog``), sans-I/O.

Site phones subscribe to an HQ extension to see whether it is on a call. The
gateway answers the SUBSCRIBE, sends a NOTIFY at once with the current state,
another on every change, and a final one when the subscription ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from gateway.pbx.dialog_info import CONTENT_TYPE, dialog_info_body
from gateway.pbx.presence import ExtensionState
from gateway.sip.dialog import Dialog, new_tag
from gateway.sip.headers import NameAddr
from gateway.sip.message import Request, Response, make_response
from gateway.sip.peer import Peer, uri_transport_param
from gateway.sip.uri import parse_uri

MAX_EXPIRES = 3600
MIN_EXPIRES = 60


@dataclass
class Subscription:
    dialog: Dialog
    exten: str
    entity: str
    expires_at: float
    version: int = 0


@dataclass(frozen=True)
class Notify:
    request: Request
    destination: Peer
    subscription: Subscription


class DialogNotifier:
    def __init__(self, state_of: Callable[[str], ExtensionState]) -> None:
        self._state_of = state_of
        self._subs: dict[tuple[str, str], Subscription] = {}

    def __len__(self) -> int:
        return len(self._subs)

    def find(self, call_id: str, our_tag: str) -> Subscription | None:
        return self._subs.get((call_id, our_tag))

    def subscribe(
        self, request: Request, source: Peer, exten: str, entity: str, local_host: str, now: float
    ) -> tuple[Response, Notify | None]:
        """A new subscription (out of dialog SUBSCRIBE, already authenticated)."""
        expires = _expires(request)
        if expires is not None and 0 < expires < MIN_EXPIRES:
            return make_response(request, 423, extra=[("Min-Expires", str(MIN_EXPIRES))]), None
        granted = MAX_EXPIRES if expires is None else min(expires, MAX_EXPIRES)
        tag = new_tag()
        contact = request.contacts[0].uri if request.contacts else request.from_.uri
        dialog = Dialog(
            call_id=request.call_id,
            local_tag=tag,
            local_uri=NameAddr(request.to.uri),
            remote_uri=NameAddr(request.from_.uri),
            local_contact=parse_uri(f"sip:{exten}@{local_host}{uri_transport_param(source.transport)}"),
            local_cseq=0,
            remote_target=contact,
            destination=source,
            local_host=local_host,
            remote_tag=request.from_.tag or "",
            remote_cseq=request.cseq.number,
        )
        sub = Subscription(dialog, exten, entity, now + granted)
        ok = make_response(
            request, 200, to_tag=tag, extra=[("Expires", str(granted)), ("Contact", f"<{dialog.local_contact}>")]
        )
        if granted == 0:
            return ok, self._notify(sub, now, terminated=True)  # a one-shot fetch
        self._subs[dialog.id] = sub
        return ok, self._notify(sub, now)

    def refresh(self, sub: Subscription, request: Request, now: float) -> tuple[Response, Notify]:
        expires = _expires(request)
        granted = MAX_EXPIRES if expires is None else min(expires, MAX_EXPIRES)
        sub.expires_at = now + granted
        ok = make_response(request, 200, extra=[("Expires", str(granted))])
        if granted == 0:
            self._subs.pop(sub.dialog.id, None)
            return ok, self._notify(sub, now, terminated=True)
        return ok, self._notify(sub, now)

    def changed(self, exten: str, now: float) -> list[Notify]:
        return [self._notify(sub, now) for sub in list(self._subs.values()) if sub.exten == exten]

    def expire(self, now: float) -> list[Notify]:
        out = []
        for sub in [s for s in self._subs.values() if s.expires_at <= now]:
            del self._subs[sub.dialog.id]
            out.append(self._notify(sub, now, terminated=True))
        return out

    def drop(self, sub: Subscription) -> None:
        """The subscriber is gone (481/timeout on a NOTIFY)."""
        self._subs.pop(sub.dialog.id, None)

    def next_deadline(self) -> float | None:
        return min((s.expires_at for s in self._subs.values()), default=None)

    def _notify(self, sub: Subscription, now: float, terminated: bool = False) -> Notify:
        state = self._state_of(sub.exten)
        body = dialog_info_body(sub.entity, state, sub.version)
        sub.version += 1
        if terminated:
            sub_state = "terminated;reason=timeout"
        else:
            sub_state = f"active;expires={max(0, int(sub.expires_at - now))}"
        request = sub.dialog.make_request(
            "NOTIFY",
            (
                ("Event", "dialog"),
                ("Subscription-State", sub_state),
                ("Contact", f"<{sub.dialog.local_contact}>"),
                ("Content-Type", CONTENT_TYPE),
            ),
        )
        request = Request(headers=request.headers, body=body, method="NOTIFY", uri=request.uri)
        return Notify(request, sub.dialog.destination, sub)


def _expires(request: Request) -> int | None:
    value = request.headers.get("Expires")
    return int(value) if value is not None and value.isdigit() else None


__all__ = ["DialogNotifier", "Notify", "Subscription", "new_tag"]
