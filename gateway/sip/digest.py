"""HTTP Digest for SIP (RFC 3261 section 22, RFC 8760 SHA-256), server side, sans-I/O.

Nonces are stateless and signed: ``base64(issued_at | random) . hmac``, so any
gateway process holding the secret can check one, and a forged or expired one
is recognised without a table. Only the nonce-count high-water marks are kept
(bounded), which is what stops a captured Authorization being replayed.

Unknown users are checked against a random HA1, so they cost the same and get
the same 401 as a wrong password: the response never tells who exists.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import struct
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass

from gateway.sip.randomness import token_bytes

ALGORITHMS = ("SHA-256", "MD5")


def _h(algorithm: str, text: str) -> str:
    fn = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return fn(text.encode()).hexdigest()


@dataclass(frozen=True)
class Credentials:
    """The parameters of a Digest Authorization header."""

    username: str
    realm: str
    nonce: str
    uri: str
    response: str
    algorithm: str
    qop: str
    nc: str
    cnonce: str
    opaque: str

    @classmethod
    def from_params(cls, params: dict[str, str]) -> Credentials | None:
        try:
            return cls(
                username=params["username"],
                realm=params["realm"],
                nonce=params["nonce"],
                uri=params["uri"],
                response=params["response"].lower(),
                algorithm=params.get("algorithm", "MD5").upper(),
                qop=params.get("qop", ""),
                nc=params.get("nc", ""),
                cnonce=params.get("cnonce", ""),
                opaque=params.get("opaque", ""),
            )
        except KeyError:
            return None


@dataclass(frozen=True)
class AuthAccepted:
    username: str


@dataclass(frozen=True)
class AuthRejected:
    reason: str
    # The nonce was ours but too old: challenge again with stale=true (no new password prompt).
    stale: bool = False


AuthResult = AuthAccepted | AuthRejected


class DigestAuthenticator:
    def __init__(
        self,
        secret: bytes,
        nonce_ttl: float = 300.0,
        algorithms: tuple[str, ...] = ALGORITHMS,
        max_tracked_nonces: int = 100_000,
        per_realm: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        if len(secret) < 16:
            raise ValueError("the nonce secret must be at least 16 bytes")
        self._secret = secret
        self._ttl = nonce_ttl
        self.algorithms = algorithms
        # A tenant whose phones choke on SHA-256 challenges (baresip 1.0) can be offered MD5 only.
        self._per_realm = dict(per_realm or {})
        self._nc_seen: OrderedDict[str, int] = OrderedDict()
        self._max_tracked = max_tracked_nonces
        self._decoy_ha1 = {alg: _h(alg, os.urandom(16).hex()) for alg in ALGORITHMS}

    def algorithms_for(self, realm: str) -> tuple[str, ...]:
        return self._per_realm.get(realm, self.algorithms)

    # --- challenges ----------------------------------------------------------

    def make_nonce(self, realm: str, now: float) -> str:
        body = struct.pack("!d", now) + token_bytes(12)
        mac = hmac.new(self._secret, body + realm.encode(), hashlib.sha256).digest()[:16]
        return base64.urlsafe_b64encode(body + mac).decode().rstrip("=")

    def challenges(self, realm: str, now: float, stale: bool = False) -> list[str]:
        """WWW-Authenticate values, strongest first (RFC 8760 section 2.4)."""
        nonce = self.make_nonce(realm, now)
        opaque = hmac.new(self._secret, b"opaque" + realm.encode(), hashlib.sha256).hexdigest()[:16]
        stale_param = ", stale=true" if stale else ""
        return [
            f'Digest realm="{realm}", nonce="{nonce}", opaque="{opaque}", algorithm={alg}, qop="auth"{stale_param}'
            for alg in self.algorithms_for(realm)
        ]

    def _nonce_age(self, nonce: str, realm: str, now: float) -> float | None:
        """Seconds since we issued ``nonce`` for ``realm``, or None if we did not issue it."""
        try:
            raw = base64.urlsafe_b64decode(nonce + "=" * (-len(nonce) % 4))
        except (ValueError, TypeError):
            return None
        if len(raw) != 36:
            return None
        body, mac = raw[:20], raw[20:]
        expected = hmac.new(self._secret, body + realm.encode(), hashlib.sha256).digest()[:16]
        if not hmac.compare_digest(mac, expected):
            return None
        (issued,) = struct.unpack("!d", body[:8])
        age: float = now - issued
        return age

    # --- verification --------------------------------------------------------

    def verify(self, creds: Credentials, method: str, realm: str, ha1: str | None, now: float) -> AuthResult:
        """Check ``creds`` for a request; ``ha1`` is the user's stored HA1, None if no such user."""
        if creds.realm != realm:
            return AuthRejected("wrong realm")
        if creds.algorithm not in self.algorithms_for(realm):
            return AuthRejected(f"algorithm {creds.algorithm} not offered")
        age = self._nonce_age(creds.nonce, realm, now)
        if age is None or age < 0:
            return AuthRejected("nonce not issued by us")
        if creds.qop != "auth" or not creds.cnonce:
            return AuthRejected("qop=auth with a cnonce is required")
        try:
            nc = int(creds.nc, 16)
        except ValueError:
            return AuthRejected("bad nonce count")
        key_ha1 = ha1 if ha1 is not None else self._decoy_ha1[creds.algorithm]
        ha2 = _h(creds.algorithm, f"{method}:{creds.uri}")
        expected = _h(creds.algorithm, f"{key_ha1}:{creds.nonce}:{creds.nc}:{creds.cnonce}:{creds.qop}:{ha2}")
        if not hmac.compare_digest(expected, creds.response) or ha1 is None:
            return AuthRejected("wrong credentials")
        if age > self._ttl:
            return AuthRejected("nonce expired", stale=True)
        if nc <= self._nc_seen.get(creds.nonce, 0):
            return AuthRejected("nonce count replayed")
        self._remember_nc(creds.nonce, nc)
        return AuthAccepted(creds.username)

    def _remember_nc(self, nonce: str, nc: int) -> None:
        self._nc_seen[nonce] = nc
        self._nc_seen.move_to_end(nonce)
        while len(self._nc_seen) > self._max_tracked:
            self._nc_seen.popitem(last=False)


def client_response(
    algorithm: str,
    username: str,
    realm: str,
    password: str,
    method: str,
    uri: str,
    nonce: str,
    nc: str,
    cnonce: str,
    qop: str = "auth",
) -> str:
    """What a client puts in ``response=`` (used by our own trunk client and by tests)."""
    ha1 = _h(algorithm, f"{username}:{realm}:{password}")
    ha2 = _h(algorithm, f"{method}:{uri}")
    if qop:
        return _h(algorithm, f"{ha1}:{nonce}:{nc}:{cnonce}:{qop}:{ha2}")
    return _h(algorithm, f"{ha1}:{nonce}:{ha2}")
