"""Signed, expiring session tokens for the browser phone (sans-I/O: the caller passes ``now``).

A token is ``v1.<payload>.<mac>``: the payload is base64url JSON naming the
user, when it was issued and when it expires; the MAC is HMAC-SHA256 over
``v1.<payload>`` with a secret generated at first start. Any gateway process
holding the secret can check a token without a table; a token lasts until it
expires (the page signs in again). ``now`` is wall-clock UTC seconds, since a
token outlives the process that issued it.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets
from dataclasses import dataclass

from gateway.webrtc.errors import TokenRejected

_VERSION = "v1"


@dataclass(frozen=True)
class SessionClaims:
    username: str
    tenant: str
    issued_at: int
    expires_at: int
    token_id: str

    @property
    def address(self) -> str:
        return f"{self.username}@{self.tenant}"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    try:
        return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (ValueError, TypeError):
        raise TokenRejected("not base64") from None


class TokenIssuer:
    def __init__(self, secret: bytes, ttl: int) -> None:
        if len(secret) < 16:
            raise ValueError("the token secret must be at least 16 bytes")
        self._secret = secret
        self.ttl = ttl

    def _mac(self, signed: str) -> str:
        return _b64(hmac.new(self._secret, signed.encode(), hashlib.sha256).digest())

    def issue(self, username: str, tenant: str, now: float) -> tuple[str, SessionClaims]:
        claims = SessionClaims(username, tenant, int(now), int(now) + self.ttl, secrets.token_hex(8))
        payload = {"sub": claims.address, "iat": claims.issued_at, "exp": claims.expires_at, "jti": claims.token_id}
        signed = f"{_VERSION}.{_b64(json.dumps(payload, separators=(',', ':')).encode())}"
        return f"{signed}.{self._mac(signed)}", claims

    def verify(self, token: str, now: float) -> SessionClaims:
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION:
            raise TokenRejected("malformed")
        signed = f"{parts[0]}.{parts[1]}"
        if not hmac.compare_digest(self._mac(signed), parts[2]):
            raise TokenRejected("bad signature")
        try:
            payload = json.loads(_unb64(parts[1]))
            username, _, tenant = str(payload["sub"]).partition("@")
            claims = SessionClaims(username, tenant, int(payload["iat"]), int(payload["exp"]), str(payload["jti"]))
        except (ValueError, KeyError, TypeError):
            raise TokenRejected("bad payload") from None
        if not username or not tenant:
            raise TokenRejected("bad subject")
        if now >= claims.expires_at:
            raise TokenRejected("expired")
        return claims
