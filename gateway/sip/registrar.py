"""REGISTER processing (RFC 3261 section 10.3), sans-I/O.

The caller (the SIP service) looks up the user and the current bindings, then
hands both here; this module decides the response and the new binding set.
Authentication is checked before anything about the user is revealed.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gateway.sip.digest import AuthAccepted, AuthRejected, Credentials, DigestAuthenticator
from gateway.sip.errors import ParseError
from gateway.sip.headers import NameAddr, parse_auth_params
from gateway.sip.message import Request, Response, make_response
from gateway.sip.peer import Peer
from gateway.sip.uas import stable_tag


@dataclass(frozen=True)
class Binding:
    """One registered contact of an address-of-record."""

    aor: str  # user@tenant
    contact: str  # the Contact URI as the phone gave it
    source: Peer  # where the REGISTER came from: where we send requests (NAT-friendly)
    expires_at: float  # monotonic
    call_id: str
    cseq: int
    instance: str = ""  # +sip.instance, when given (RFC 5626)
    # Wall-clock UTC instant of registration (for status displays only).
    registered_at: float = 0.0

    def remaining(self, now: float) -> int:
        return max(0, int(round(self.expires_at - now)))


@dataclass(frozen=True)
class RegistrarPolicy:
    min_expires: int = 60
    max_expires: int = 3600
    default_expires: int = 3600
    max_contacts: int = 10


@dataclass(frozen=True)
class RegisterOutcome:
    response: Response
    # The AOR's bindings after the request; None when the request changed nothing.
    bindings: tuple[Binding, ...] | None = None
    authenticated: str | None = None


def credentials_of(request: Request, header: str = "Authorization") -> Credentials | None:
    for value in request.headers.get_all(header):
        try:
            scheme, params = parse_auth_params(value)
        except ParseError:
            continue
        if scheme.lower() == "digest":
            creds = Credentials.from_params(params)
            if creds is not None:
                return creds
    return None


def challenge_response(
    request: Request,
    auth: DigestAuthenticator,
    realm: str,
    now: float,
    *,
    stale: bool = False,
    proxy: bool = False,
) -> Response:
    header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
    status = 407 if proxy else 401
    extra = [(header, value) for value in auth.challenges(realm, now, stale=stale)]
    return make_response(request, status, to_tag=stable_tag(request), extra=extra)


def process_register(
    request: Request,
    source: Peer,
    tenant: str,
    ha1s: Mapping[str, str] | None,
    current: tuple[Binding, ...],
    auth: DigestAuthenticator,
    policy: RegistrarPolicy,
    now: float,
    wall: float,
) -> RegisterOutcome:
    """Decide the response to a REGISTER for ``user@tenant``.

    ``ha1s`` maps digest algorithm to the user's stored HA1; None when no such user.
    """
    to_user = request.to.uri.user or ""
    creds = credentials_of(request)
    if creds is None:
        return RegisterOutcome(challenge_response(request, auth, tenant, now))
    ha1 = ha1s.get(creds.algorithm) if ha1s is not None else None
    result = auth.verify(creds, "REGISTER", tenant, ha1, now)
    if isinstance(result, AuthRejected):
        return RegisterOutcome(challenge_response(request, auth, tenant, now, stale=result.stale))
    assert isinstance(result, AuthAccepted)
    if result.username != to_user:
        # Authenticated, but as someone else: no third-party registration.
        return RegisterOutcome(make_response(request, 403, "Forbidden (not your address)", to_tag=stable_tag(request)))
    aor = f"{to_user}@{tenant}"
    return _update_bindings(request, source, aor, current, policy, now, wall, result.username)


def _update_bindings(
    request: Request,
    source: Peer,
    aor: str,
    current: tuple[Binding, ...],
    policy: RegistrarPolicy,
    now: float,
    wall: float,
    username: str,
) -> RegisterOutcome:
    tag = stable_tag(request)
    live = [b for b in current if b.expires_at > now]
    contacts = request.contacts
    header_expires = request.headers.get("Expires")
    call_id, cseq = request.call_id, request.cseq.number

    if any(c.wildcard for c in contacts):
        if len(contacts) != 1 or header_expires != "0":
            return RegisterOutcome(make_response(request, 400, "Bad Request (Contact: * needs Expires: 0)", to_tag=tag))
        return RegisterOutcome(_ok(request, [], now, tag), (), username)

    if not contacts:  # a query: list the bindings
        return RegisterOutcome(_ok(request, live, now, tag), None, username)

    updated = {b.contact: b for b in live}
    for contact in contacts:
        expires = _expires_of(contact, header_expires, policy.default_expires)
        if expires is None:
            return RegisterOutcome(make_response(request, 400, "Bad Request (bad expires)", to_tag=tag))
        if 0 < expires < policy.min_expires:
            return RegisterOutcome(
                make_response(request, 423, to_tag=tag, extra=[("Min-Expires", str(policy.min_expires))])
            )
        key = str(contact.uri)
        existing = updated.get(key)
        if existing is not None and existing.call_id == call_id and cseq <= existing.cseq:
            continue  # an old, reordered REGISTER: keep the newer binding
        if expires == 0:
            updated.pop(key, None)
            continue
        expires = min(expires, policy.max_expires)
        instance = contact.param("+sip.instance") or ""
        if instance:
            # The same device (RFC 5626 instance) replaces its previous contact.
            for other_key, other in list(updated.items()):
                if other.instance == instance and other_key != key:
                    del updated[other_key]
        updated[key] = Binding(aor, key, source, now + expires, call_id, cseq, instance, wall)
    if len(updated) > policy.max_contacts:
        # Drop the ones that expire soonest rather than refuse the device registering now.
        kept = sorted(updated.values(), key=lambda b: b.expires_at, reverse=True)[: policy.max_contacts]
        updated = {b.contact: b for b in kept}
    bindings = tuple(updated.values())
    return RegisterOutcome(_ok(request, list(bindings), now, tag), bindings, username)


def _expires_of(contact: NameAddr, header: str | None, default: int) -> int | None:
    value = contact.param("expires")
    if value is None:
        value = header
    if value is None:
        return default
    if not re.fullmatch(r"[0-9]{1,32}", value):  # ASCII, and short enough for int()
        return None
    return min(int(value), 2**31 - 1)


def _ok(request: Request, bindings: list[Binding], now: float, tag: str) -> Response:
    extra = [("Contact", f"<{b.contact}>;expires={b.remaining(now)}") for b in bindings]
    return make_response(request, 200, to_tag=tag, extra=extra)


def refresh_source(binding: Binding, source: Peer) -> Binding:
    return replace(binding, source=source)
