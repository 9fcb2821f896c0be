"""Registering the gateway with a PBX or provider (a trunk), as a sans-I/O state machine.

Inputs: ``start(now)``, ``on_response(response, now)``, ``on_timeout(now)``, ``due(now)``.
Output: the REGISTER to send (the caller starts a client transaction with it) and
the deadline for the next refresh or retry. Failures back off; a 403 is final
until the configuration changes, and is reported as the trunk's state.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from gateway.sip.client_auth import ClientCredentials, authorization_for
from gateway.sip.dialog import new_call_id, new_tag, via_header
from gateway.sip.message import Headers, Request, Response
from gateway.sip.uri import parse_uri


class RegState(enum.Enum):
    IDLE = "idle"
    REGISTERING = "registering"
    REGISTERED = "registered"
    FAILED = "failed"  # no answer or an error: retrying with back-off
    REFUSED = "refused"  # 403/404: the PBX does not want us; retried slowly


@dataclass
class RegistrationClient:
    registrar: str  # "host:port" of the PBX
    domain: str  # the AOR's domain (the PBX's realm or host)
    credentials: ClientCredentials
    contact: str  # our Contact URI
    local_host: str  # our host:port for Via
    transport: str = "UDP"
    expires: int = 600
    retry_min: float = 5.0
    retry_max: float = 300.0
    state: RegState = RegState.IDLE
    last_status: int | None = None
    last_reason: str = ""
    call_id: str = field(default_factory=lambda: new_call_id("seabridge"))
    from_tag: str = field(default_factory=new_tag)
    cseq: int = 0
    next_at: float | None = None
    _failures: int = 0
    _auth_tries: int = 0

    @property
    def aor(self) -> str:
        return f"sip:{self.credentials.username}@{self.domain}"

    def start(self, now: float) -> Request:
        self._auth_tries = 0
        return self._register(None)

    def due(self, now: float) -> bool:
        return self.next_at is not None and now >= self.next_at

    def _register(self, authorization: tuple[str, str] | None) -> Request:
        self.cseq += 1
        self.state = RegState.REGISTERING
        self.next_at = None
        pairs = [
            ("Via", via_header(self.transport, self.local_host)),
            ("Max-Forwards", "70"),
            ("From", f"<{self.aor}>;tag={self.from_tag}"),
            ("To", f"<{self.aor}>"),
            ("Call-ID", self.call_id),
            ("CSeq", f"{self.cseq} REGISTER"),
            ("Contact", f"<{self.contact}>"),
            ("Expires", str(self.expires)),
            ("User-Agent", "Seabridge"),
        ]
        if authorization is not None:
            pairs.append(authorization)
        return Request(headers=Headers(tuple(pairs)), method="REGISTER", uri=parse_uri(f"sip:{self.registrar}"))

    def on_response(self, response: Response, now: float) -> Request | None:
        """Handle the final response; returns a REGISTER to send at once (an auth retry) or None."""
        if response.status < 200:
            return None
        self.last_status, self.last_reason = response.status, response.reason
        if response.status in (401, 407) and self._auth_tries < 2:
            self._auth_tries += 1
            authorization = authorization_for(response, self.credentials, "REGISTER", f"sip:{self.registrar}")
            if authorization is not None:
                return self._register(authorization)
        if 200 <= response.status < 300:
            self.state = RegState.REGISTERED
            self._failures = 0
            granted = self._granted_expires(response)
            # Refresh before expiry, sooner on short grants.
            self.next_at = now + max(1.0, min(granted * 0.8, granted - 5.0))
            self._auth_tries = 0
            return None
        self._fail(now, refused=response.status in (401, 403, 404, 407))
        return None

    def on_timeout(self, now: float) -> None:
        self.last_status, self.last_reason = 408, "no answer from the registrar"
        self._fail(now, refused=False)

    def _fail(self, now: float, refused: bool) -> None:
        self._failures += 1
        self._auth_tries = 0
        self.state = RegState.REFUSED if refused else RegState.FAILED
        delay = min(self.retry_max, self.retry_min * 2 ** (self._failures - 1))
        self.next_at = now + (self.retry_max if refused else delay)

    def _granted_expires(self, response: Response) -> int:
        for contact in response.contacts:
            if str(contact.uri) == self.contact and contact.param("expires"):
                value = contact.param("expires") or ""
                if value.isdigit():
                    return int(value)
        header = response.headers.get("Expires")
        return int(header) if header and header.isdigit() else self.expires
