"""SIP and SIPS URIs (RFC 3261 section 19.1); other schemes are kept opaque."""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, replace
from functools import lru_cache
from urllib.parse import unquote

from gateway.sip.errors import ParseError

_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)$")
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*$")
# RFC 3261 section 25.1: user = 1*( unreserved / escaped / user-unreserved ),
# password = *( unreserved / escaped / "&" / "=" / "+" / "$" / "," ).
_USER = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,;?/%]+$")
_PASSWORD = re.compile(r"^[A-Za-z0-9\-_.!~*'()&=+$,%]*$")
# \s is exactly what str.isspace() accepts, one character at a time.
_SPACE = re.compile(r"\s")
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")
_PORT = re.compile(r"[0-9]{1,5}")
# The usual SIP URI in one match: lower-case scheme, a user without escapes, ":", ";", "?"
# or "/", a host name or IPv4 address, parameters without "@" or "?", no headers. It
# accepts a subset of what parse_uri's general code does, and splits it the same way.
_PLAIN_SIP_URI = re.compile(
    r"(sips?):(?:([A-Za-z0-9\-_.!~*'()&=+$,]+)@)?([A-Za-z0-9._-]+)(?::([0-9]{1,5}))?((?:;[^;?@\s]+)*)"
).fullmatch


@dataclass(frozen=True)
class Uri:
    scheme: str
    user: str | None
    host: str
    port: int | None = None
    params: tuple[tuple[str, str | None], ...] = ()
    headers: str = ""
    # For non-SIP schemes (tel:, urn:...) the text after "scheme:" verbatim.
    opaque: str = ""
    password: str | None = None

    @property
    def is_sip(self) -> bool:
        return self.scheme in ("sip", "sips")

    def param(self, name: str) -> str | None:
        name = name.lower()
        for key, value in self.params:
            if key.lower() == name:
                return value if value is not None else ""
        return None

    def with_params(self, **params: str | None) -> Uri:
        kept = tuple((k, v) for k, v in self.params if k.lower() not in params)
        return replace(self, params=kept + tuple(params.items()))

    def without_params(self) -> Uri:
        return replace(self, params=(), headers="")

    @property
    def host_port(self) -> str:
        return self.host if self.port is None else f"{self.host}:{self.port}"

    @property
    def address(self) -> str:
        """user@host, for logs and AOR comparison."""
        return f"{self.user}@{self.host}" if self.user else self.host

    def aor(self) -> str:
        """The address-of-record form: scheme:user@host, no port or parameters, host lower-case."""
        user = f"{self.user}@" if self.user else ""
        return f"{self.scheme}:{user}{self.host.lower()}"

    def __str__(self) -> str:
        # is_sip and host_port spelled out: a dozen URIs are written per call set-up.
        if self.scheme not in ("sip", "sips"):
            return f"{self.scheme}:{self.opaque}"
        out = [self.scheme, ":"]
        if self.user is not None:
            out.append(self.user)
            if self.password is not None:
                out += [":", self.password]
            out.append("@")
        out.append(self.host if self.port is None else f"{self.host}:{self.port}")
        for key, value in self.params:
            out.append(f";{key}" if value is None else f";{key}={value}")
        if self.headers:
            out += ["?", self.headers]
        return "".join(out)


@lru_cache(maxsize=4096)
def parse_uri(text: str) -> Uri:
    """A URI from its text; cached, since the same URIs (a phone's Contact, the Request-URIs
    of a busy extension, our own address) come back in message after message, and a Uri is
    immutable."""
    m = _PLAIN_SIP_URI(text)
    if m is not None:
        scheme, user, host, port_text, param_text = m.groups()
        port = int(port_text) if port_text is not None else None
        if port is None or 0 < port < 65536:
            params = tuple(_split_param(part) for part in param_text[1:].split(";")) if param_text else ()
            return Uri(scheme, user, host, port, params, "", password=None)
    return _parse_uri_general(text)


def _parse_uri_general(text: str) -> Uri:
    text = text.strip()
    scheme, sep, rest = text.partition(":")
    if not sep or not _SCHEME.match(scheme):
        raise ParseError(f"not a URI: {text[:80]!r}")
    if _SPACE.search(rest):
        raise ParseError(f"whitespace inside URI {text[:80]!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        if not rest:
            raise ParseError(f"empty {scheme} URI")
        return Uri(scheme=scheme, user=None, host="", opaque=rest)
    user: str | None = None
    password: str | None = None
    # "@" appears unescaped only after the userinfo (RFC 3261 section 19.1.1), while the
    # user part may itself hold ";", "?" and "," (user-unreserved): split at the last "@".
    if "@" in rest:
        userinfo, _, rest = rest.rpartition("@")
        user, psep, pw = userinfo.partition(":")
        password = pw if psep else None
        if not user:
            raise ParseError(f"empty user part in {text[:80]!r}")
        if not _USER.match(user) or not _valid_escapes(user):
            raise ParseError(f"bad user part in {text[:80]!r}")
        if password is not None and (not _PASSWORD.match(password) or not _valid_escapes(password)):
            raise ParseError(f"bad password in {text[:80]!r}")
    rest, _, headers = rest.partition("?")
    hostport, *param_parts = rest.split(";")
    host, port = _split_host_port(hostport, text)
    params: list[tuple[str, str | None]] = []
    for part in param_parts:
        if not part:
            raise ParseError(f"empty URI parameter in {text[:80]!r}")
        params.append(_split_param(part))
    return Uri(scheme, user, host, port, tuple(params), headers, password=password)


def _split_param(part: str) -> tuple[str, str | None]:
    key, eq, value = part.partition("=")
    return key, value if eq else None


def _valid_escapes(s: str) -> bool:
    return "%" not in s or _BAD_ESCAPE.search(s) is None


def unescaped_user(uri: Uri) -> str | None:
    return unquote(uri.user) if uri.user is not None else None


def _split_host_port(hostport: str, original: str) -> tuple[str, int | None]:
    if hostport.startswith("["):
        end = hostport.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {original[:80]!r}")
        host, rest = hostport[: end + 1], hostport[end + 1 :]
        try:
            ipaddress.IPv6Address(host[1:-1])
        except ValueError:
            raise ParseError(f"bad IPv6 address in {original[:80]!r}") from None
        if rest and not rest.startswith(":"):
            raise ParseError(f"junk after IPv6 reference in {original[:80]!r}")
        port_text = rest[1:] if rest else None
    else:
        host, sep, port_text_raw = hostport.partition(":")
        port_text = port_text_raw if sep else None
    if not host or not _HOST.match(host):
        raise ParseError(f"bad host in {original[:80]!r}")
    if port_text is None:
        return host, None
    if not _PORT.fullmatch(port_text) or not 0 < int(port_text) < 65536:
        raise ParseError(f"bad port in {original[:80]!r}")
    return host, int(port_text)


def format_host(host: str) -> str:
    """An IP for use in a URI or Via: IPv6 literals get brackets."""
    if ":" in host and not host.startswith("["):
        return f"[{host}]"
    return host
