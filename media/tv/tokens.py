"""Per-tenant viewing tokens: expiring, HMAC-signed, carried in the URL path.

Players drop query strings on segment URLs, so the token is a path element
(``/iptv/<token>/...``). It is self-contained: version, a random id (for revocation),
the expiry and the tenant, then a truncated HMAC-SHA256 over all of it, base64url-encoded.
Verification needs only the secret and the revoked ids; no lookup per request.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from media.tv import TvError

_VERSION = 1
_MAC_BYTES = 16
_ID_BYTES = 8
_HEADER = 1 + _ID_BYTES + 8
_TOKEN_CHARS = re.compile(r"^[A-Za-z0-9_-]{40,400}$")
TOKEN_ID = re.compile(r"^[0-9a-f]{16}$")


class TokenRejected(TvError):
    """A token that grants nothing; the HTTP layer answers ``status``."""

    status = 403

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class TokenClaims:
    token_id: str  # 16 hex digits
    tenant: str
    expires: int  # UTC seconds since the epoch


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(secret: bytes, payload: bytes) -> bytes:
    return hmac.new(secret, payload, hashlib.sha256).digest()[:_MAC_BYTES]


def issue(secret: bytes, tenant: str, expires: int, token_id: str | None = None) -> str:
    tid = bytes.fromhex(token_id) if token_id else secrets.token_bytes(_ID_BYTES)
    name = tenant.lower().encode("utf-8")
    if not name or len(name) > 253:
        raise ValueError("tenant name must be 1-253 bytes")
    payload = bytes([_VERSION]) + tid + expires.to_bytes(8, "big") + name
    return _b64(payload + _mac(secret, payload))


def decode(secret: bytes, token: str) -> TokenClaims:
    """The claims of an authentic token, expired or not (for revocation by token)."""
    if not _TOKEN_CHARS.match(token):
        raise TokenRejected("malformed token")
    try:
        raw = _unb64(token)
    except ValueError:
        raise TokenRejected("malformed token") from None
    if len(raw) < _HEADER + 1 + _MAC_BYTES or raw[0] != _VERSION:
        raise TokenRejected("malformed token")
    payload, mac = raw[:-_MAC_BYTES], raw[-_MAC_BYTES:]
    if not hmac.compare_digest(mac, _mac(secret, payload)):
        raise TokenRejected("bad signature")
    try:
        tenant = payload[_HEADER:].decode("utf-8")
    except UnicodeDecodeError:
        raise TokenRejected("malformed token") from None
    return TokenClaims(
        payload[1 : 1 + _ID_BYTES].hex(), tenant, int.from_bytes(payload[1 + _ID_BYTES : _HEADER], "big")
    )


def verify(secret: bytes, token: str, now: float, revoked: frozenset[str] | set[str]) -> TokenClaims:
    """The claims of a token that grants access at wall-clock ``now``, else TokenRejected."""
    claims = decode(secret, token)
    if now >= claims.expires:
        raise TokenRejected("token expired")
    if claims.token_id in revoked:
        raise TokenRejected("token revoked")
    return claims
