"""Answering a digest challenge as a client (our trunks towards a PBX), sans-I/O."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from gateway.sip.digest import client_response
from gateway.sip.errors import ParseError
from gateway.sip.headers import parse_auth_params
from gateway.sip.message import Response

SUPPORTED = ("SHA-256", "MD5")


@dataclass(frozen=True)
class ClientCredentials:
    username: str
    password: str


def authorization_for(
    response: Response, creds: ClientCredentials, method: str, uri: str, nc: int = 1
) -> tuple[str, str] | None:
    """The (header name, value) answering a 401/407, or None if no challenge is usable.

    RFC 8760 section 2.4: take the first challenge with an algorithm we support.
    """
    header = "WWW-Authenticate" if response.status == 401 else "Proxy-Authenticate"
    answer_header = "Authorization" if response.status == 401 else "Proxy-Authorization"
    for value in response.headers.get_all(header):
        try:
            scheme, params = parse_auth_params(value)
        except ParseError:
            continue
        if scheme.lower() != "digest":
            continue
        algorithm = params.get("algorithm", "MD5").upper()
        if algorithm not in SUPPORTED:
            continue
        realm, nonce = params.get("realm", ""), params.get("nonce", "")
        qops = [q.strip() for q in params.get("qop", "").split(",") if q.strip()]
        qop = "auth" if "auth" in qops else ""
        cnonce = secrets.token_hex(8)
        nc_text = f"{nc:08x}"
        digest = client_response(
            algorithm, creds.username, realm, creds.password, method, uri, nonce, nc_text, cnonce, qop
        )
        parts = [
            f'username="{creds.username}"',
            f'realm="{realm}"',
            f'nonce="{nonce}"',
            f'uri="{uri}"',
            f'response="{digest}"',
            f"algorithm={algorithm}",
        ]
        if qop:
            parts += [f"qop={qop}", f"nc={nc_text}", f'cnonce="{cnonce}"']
        if "opaque" in params:
            parts.append(f'opaque="{params["opaque"]}"')
        return answer_header, "Digest " + ", ".join(parts)
    return None
