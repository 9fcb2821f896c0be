"""Digest client side for the internal user agent, from the user's stored HA1 (sans-I/O).

The gateway keeps only HA1 = H(user:realm:password) for each algorithm, never
the password; a digest response needs nothing more (RFC 7616 section 3.4.1:
response = H(HA1:nonce:nc:cnonce:qop:H(method:uri))). So the browser's
SIP leg authenticates to the SIP service exactly as a phone does, and the
service's checks (realm = tenant, replay guard, tenant isolation) apply.
"""

from __future__ import annotations

import hashlib
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace

from gateway.sip.errors import ParseError
from gateway.sip.headers import parse_auth_params
from gateway.sip.message import Response


def _h(algorithm: str, text: str) -> str:
    fn = hashlib.sha256 if algorithm == "SHA-256" else hashlib.md5
    return fn(text.encode()).hexdigest()


@dataclass(frozen=True)
class Challenge:
    realm: str
    nonce: str
    algorithm: str
    opaque: str = ""
    stale: bool = False
    # How many requests we have answered this nonce with (the nc of the next one is count + 1).
    count: int = 0

    def answered(self) -> Challenge:
        return replace(self, count=self.count + 1)


def pick_challenge(response: Response, ha1s: Mapping[str, str]) -> Challenge | None:
    """The first challenge in ``response`` (strongest first, RFC 8760) we hold an HA1 for."""
    header = "Proxy-Authenticate" if response.status == 407 else "WWW-Authenticate"
    for value in response.headers.get_all(header):
        try:
            scheme, params = parse_auth_params(value)
        except ParseError:
            continue
        algorithm = params.get("algorithm", "MD5").upper()
        if scheme.lower() != "digest" or algorithm not in ha1s or "nonce" not in params:
            continue
        if "auth" not in [q.strip() for q in params.get("qop", "auth").split(",")]:
            continue
        return Challenge(
            realm=params.get("realm", ""),
            nonce=params["nonce"],
            algorithm=algorithm,
            opaque=params.get("opaque", ""),
            stale=params.get("stale", "").lower() == "true",
        )
    return None


def authorization(
    challenge: Challenge, username: str, ha1: str, method: str, uri: str, cnonce: str | None = None
) -> str:
    """The Authorization / Proxy-Authorization value answering ``challenge`` (its next nonce count)."""
    nc = f"{challenge.count + 1:08x}"
    cnonce = cnonce or secrets.token_hex(8)
    ha2 = _h(challenge.algorithm, f"{method}:{uri}")
    response = _h(challenge.algorithm, f"{ha1}:{challenge.nonce}:{nc}:{cnonce}:auth:{ha2}")
    parts = [
        f'username="{username}"',
        f'realm="{challenge.realm}"',
        f'nonce="{challenge.nonce}"',
        f'uri="{uri}"',
        f'response="{response}"',
        f"algorithm={challenge.algorithm}",
        "qop=auth",
        f"nc={nc}",
        f'cnonce="{cnonce}"',
    ]
    if challenge.opaque:
        parts.append(f'opaque="{challenge.opaque}"')
    return "Digest " + ", ".join(parts)
