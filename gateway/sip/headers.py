"""Typed views of the SIP header values the gateway reads: name-addr, Via, CSeq, auth params."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from gateway.sip.errors import ParseError
from gateway.sip.lazy import once
from gateway.sip.uri import Uri, parse_uri

Params = tuple[tuple[str, str | None], ...]

COMPACT_FORMS: dict[str, str] = {
    "i": "Call-ID",
    "m": "Contact",
    "e": "Content-Encoding",
    "l": "Content-Length",
    "c": "Content-Type",
    "f": "From",
    "s": "Subject",
    "k": "Supported",
    "t": "To",
    "v": "Via",
    "o": "Event",
    "u": "Allow-Events",
    "r": "Refer-To",
    "b": "Referred-By",
    "x": "Session-Expires",
    "a": "Accept-Contact",
    "j": "Reject-Contact",
    "d": "Request-Disposition",
    "y": "Identity",
}

_CANONICAL = {
    name.lower(): name
    for name in (
        "Accept",
        "Accept-Encoding",
        "Accept-Language",
        "Alert-Info",
        "Allow",
        "Allow-Events",
        "Authentication-Info",
        "Authorization",
        "Call-ID",
        "Call-Info",
        "Contact",
        "Content-Disposition",
        "Content-Encoding",
        "Content-Language",
        "Content-Length",
        "Content-Type",
        "CSeq",
        "Date",
        "Error-Info",
        "Event",
        "Expires",
        "From",
        "In-Reply-To",
        "Max-Forwards",
        "MIME-Version",
        "Min-Expires",
        "Organization",
        "P-Asserted-Identity",
        "Priority",
        "Proxy-Authenticate",
        "Proxy-Authorization",
        "Proxy-Require",
        "Reason",
        "Record-Route",
        "Refer-To",
        "Referred-By",
        "Reply-To",
        "Require",
        "Retry-After",
        "Route",
        "RSeq",
        "RAck",
        "Server",
        "Session-Expires",
        "Session-ID",
        "Subject",
        "Subscription-State",
        "Supported",
        "Timestamp",
        "To",
        "Unsupported",
        "User-Agent",
        "Via",
        "Warning",
        "WWW-Authenticate",
    )
}

# Headers whose values are comma-separated lists (RFC 3261 section 7.3.1); the
# authentication headers are not, although their parameters contain commas.
LIST_HEADERS = frozenset(
    {
        "via",
        "contact",
        "route",
        "record-route",
        "allow",
        "supported",
        "require",
        "proxy-require",
        "unsupported",
        "accept",
        "accept-encoding",
        "accept-language",
        "allow-events",
        "content-encoding",
        "content-language",
        "in-reply-to",
        "warning",
        "error-info",
        "call-info",
        "alert-info",
        "reply-to",
    }
)

_TOKEN = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+$")
_token_match = _TOKEN.match

# One lookup for both tables (no compact form is also a full name).
_NAMES: dict[str, str] = {**_CANONICAL, **COMPACT_FORMS}
# Names as they usually arrive -> canonical: a hit here skips lower-casing the name (and a
# caller holding a canonical name can look it up here without a call).
EXACT_NAMES: dict[str, str] = {
    **{name: name for name in _CANONICAL.values()},
    **COMPACT_FORMS,
    **{short.upper(): full for short, full in COMPACT_FORMS.items()},
}


# A header name as it usually arrives -> its canonical name and whether its value is a
# comma-separated list: the parser's one lookup per header line.
HEADER_FORMS: dict[str, tuple[str, bool]] = {
    name: (full, full.lower() in LIST_HEADERS) for name, full in EXACT_NAMES.items()
}


def canonical_name(name: str) -> str:
    exact = EXACT_NAMES.get(name)
    if exact is not None:
        return exact
    return _NAMES.get(name.lower(), name)


def is_token(text: str) -> bool:
    return _token_match(text) is not None


# The only characters that change split_commas' and _split_semicolons' state: the scans
# visit these instead of every character.
_COMMA_SPECIALS = re.compile(r'[\\"<>,]')
_SEMICOLON_SPECIALS = re.compile(r'[\\";]')


def split_commas(value: str) -> list[str]:
    """Split a header value on commas outside quotes and angle brackets."""
    if '"' not in value and ("," not in value or "<" not in value):
        parts = value.split(",")  # no quote, and no comma or no bracket: every comma separates
    else:
        parts = _split_commas_scan(value)
    return list(filter(None, map(str.strip, parts)))  # no comprehension: on 3.11 that is a call


def _split_commas_scan(value: str) -> list[str]:
    parts = []
    depth_angle = 0
    in_quote = False
    escaped = -1  # position of the character a backslash in quotes escapes
    start = 0
    for m in _COMMA_SPECIALS.finditer(value):
        i = m.start()
        if i == escaped:
            continue
        ch = m.group()
        if in_quote:
            if ch == "\\":
                escaped = i + 1
            elif ch == '"':
                in_quote = False
        elif ch == '"':
            in_quote = True
        elif ch == "<":
            depth_angle += 1
        elif ch == ">":
            if depth_angle:
                depth_angle -= 1
        elif ch == "," and depth_angle == 0:
            parts.append(value[start:i])
            start = i + 1
    if in_quote:
        raise ParseError("unterminated quoted string")
    parts.append(value[start:])
    return parts


def parse_params(text: str) -> Params:
    """';a=1;b' -> (('a', '1'), ('b', None)); quoted values keep their quotes.

    RFC 3261 section 25.1: every SEMI introduces a generic-param (token [EQUAL gen-value]),
    so ";;" or a dangling ";" is a syntax error, as is a value that is neither a token,
    a host nor a quoted string.
    """
    text = text.strip()
    if not text:
        return ()
    if not text.startswith(";"):
        raise ParseError(f"junk before parameters: {text[:40]!r}")
    parts = text.split(";") if '"' not in text else _split_semicolons(text)
    params: list[tuple[str, str | None]] = []
    for part in parts[1:]:
        m = _PARAM(part)
        # The pattern accepts a subset of what the general code does, with the same result;
        # anything else (other whitespace, errors) goes the general way.
        params.append((m[1], m[2]) if m is not None else _parse_param(part))
    return tuple(params)


def _parse_param(part: str) -> tuple[str, str | None]:
    key, eq, value = part.partition("=")
    key, value = key.strip(), value.strip()
    if not is_token(key):
        raise ParseError(f"bad parameter name {key[:40]!r}")
    if eq and not _GEN_VALUE.match(value):
        raise ParseError(f"bad value for parameter {key[:40]!r}")
    return key, value if eq else None


# gen-value = token / host / quoted-string (hosts add ":" and brackets for IPv6).
_GEN_VALUE = re.compile(r'^(?:"(?:[^"\\]|\\.)*"|[A-Za-z0-9\-.!%*_+`\'~\[\]:]+)$', re.DOTALL)
# token [ "=" gen-value ] with blanks around: the common case of _parse_param in one match.
_PARAM = re.compile(
    r'[ \t]*([A-Za-z0-9\-.!%*_+`\'~]+)[ \t]*(?:=[ \t]*("(?:[^"\\]|\\.)*"|[A-Za-z0-9\-.!%*_+`\'~\[\]:]+)[ \t]*)?',
    re.DOTALL,
).fullmatch


def _split_semicolons(text: str) -> list[str]:
    out, start, in_quote, escaped = [], 0, False, -1
    for m in _SEMICOLON_SPECIALS.finditer(text):
        i = m.start()
        if i == escaped:
            continue
        ch = m.group()
        if in_quote and ch == "\\":
            escaped = i + 1
        elif ch == '"':
            in_quote = not in_quote
        elif ch == ";" and not in_quote:
            out.append(text[start:i])
            start = i + 1
    if in_quote:
        raise ParseError("unterminated quoted parameter value")
    out.append(text[start:])
    return out


def format_params(params: Params) -> str:
    # Loops, not comprehensions, here and in set_param: on Python 3.11 a comprehension is a
    # function call of its own, and these run for most headers we write.
    if not params:
        return ""
    out = []
    for k, v in params:
        out.append(f";{k}" if v is None else f";{k}={v}")
    return "".join(out)


def get_param(params: Params, name: str) -> str | None:
    name = name.lower()
    for key, value in params:
        # Parameter names are case-insensitive, and nearly always sent in lower case already.
        if key == name or key.lower() == name:
            return "" if value is None else value
    return None


def set_param(params: Params, name: str, value: str | None) -> Params:
    lowered = name.lower()
    out = []
    for param in params:
        if param[0].lower() != lowered:
            out.append(param)
    out.append((name, value))
    return tuple(out)


@dataclass(frozen=True)
class NameAddr:
    """From, To, Contact, Route and Record-Route values: "Name" <uri>;params."""

    uri: Uri
    display: str = ""
    params: Params = ()
    # Contact: * (RFC 3261 section 10.2.2, remove all bindings)
    wildcard: bool = False

    @once  # parse_name_addr hands out one object per value: read once
    def tag(self) -> str | None:
        return get_param(self.params, "tag")

    def with_tag(self, tag: str) -> NameAddr:
        return NameAddr(self.uri, self.display, set_param(self.params, "tag", tag), self.wildcard)

    def param(self, name: str) -> str | None:
        return get_param(self.params, name)

    def __str__(self) -> str:
        if self.wildcard:
            return "*"
        display = f"{self.display} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


_DISPLAY_TOKENS = re.compile(r"^[A-Za-z0-9\-.!%*_+`'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`'~]+)*$")


# "display" <uri>;params or tokens <uri>;params with nothing unusual around the brackets,
# in one match; what it accepts, the general code reads the same way.
_PLAIN_NAME_ADDR = re.compile(
    r'(?:("(?:[^"\\]|\\.)*")[ \t]*|([A-Za-z0-9\-.!%*_+`\'~]+(?:[ \t]+[A-Za-z0-9\-.!%*_+`\'~]+)*)[ \t]*)?'
    r"<([^\s<>]+)>(.*)",
    re.DOTALL,
).fullmatch


# The same From, To and Contact values recur in every message of a dialog, and in both of
# its transactions' retransmissions: their (immutable) values are kept, keyed by the text
# (a bounded cache: at most 1024 header values, each no longer than a header line may be).
@lru_cache(maxsize=1024)
def parse_name_addr(text: str) -> NameAddr:
    m = _PLAIN_NAME_ADDR(text)
    if m is not None:
        quoted, tokens, uri, params = m.groups()
        return NameAddr(uri=parse_uri(uri), display=quoted or tokens or "", params=parse_params(params))
    return _parse_name_addr_general(text)


def _parse_name_addr_general(text: str) -> NameAddr:
    text = text.strip()
    if text == "*":
        return NameAddr(uri=Uri("sip", None, "*"), wildcard=True)
    display = ""
    if text.startswith('"'):
        end = _closing_quote(text)
        display = text[: end + 1]
        rest = text[end + 1 :].lstrip()
        if not rest.startswith("<"):
            raise ParseError("display name without <uri>")
    else:
        lt = text.find("<")
        if lt < 0:
            return _parse_addr_spec(text)
        display = text[:lt].strip()
        # An unquoted display name is a run of tokens (RFC 3261 section 25.1 display-name);
        # "Bell, Alexander" needs quotes. No LWS before "<" is tolerated (RFC 4475 3.1.1.6).
        if display and not _DISPLAY_TOKENS.match(display):
            raise ParseError(f"display name needs quotes: {display[:40]!r}")
        rest = text[lt:]
    gt = rest.find(">")
    if gt < 0:
        raise ParseError("unterminated <uri>")
    inner = rest[1:gt]
    if inner != inner.strip():
        raise ParseError("whitespace inside <uri>")
    return NameAddr(uri=parse_uri(inner), display=display, params=parse_params(rest[gt + 1 :]))


def _parse_addr_spec(text: str) -> NameAddr:
    # Without brackets, parameters after ";" belong to the header, not the URI, and a URI
    # holding "," or "?" must be bracketed (RFC 3261 section 20.10).
    uri_text, sep, param_text = text.partition(";")
    uri_text = uri_text.strip()
    if "," in uri_text or "?" in uri_text:
        raise ParseError("a URI with ',' or '?' must be enclosed in <>")
    return NameAddr(uri=parse_uri(uri_text), params=parse_params(sep + param_text))


_QUOTED = re.compile(r'"(?:[^"\\]|\\.)*"', re.DOTALL)


def _closing_quote(text: str) -> int:
    m = _QUOTED.match(text)
    if m is None:
        raise ParseError("unterminated display name")
    return m.end() - 1


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: Params = ()

    # Cached: a Via is read many times per message (transaction keys, stamping, responses),
    # and parse_via hands the same object to every message that carries the same value.
    @once
    def branch(self) -> str | None:
        return get_param(self.params, "branch")

    @once
    def received(self) -> str | None:
        return get_param(self.params, "received")

    @once
    def rport(self) -> str | None:
        return get_param(self.params, "rport")

    def with_param(self, name: str, value: str | None) -> Via:
        # Direct construction, not dataclasses.replace: the received/rport stamp of every request.
        return Via(self.transport, self.host, self.port, set_param(self.params, name, value))

    def __str__(self) -> str:
        port = f":{self.port}" if self.port is not None else ""
        return f"SIP/2.0/{self.transport} {self.host}{port}{format_params(self.params)}"


_VIA = re.compile(
    r"^SIP\s*/\s*(?P<version>[0-9]+\.[0-9]+)\s*/\s*(?P<transport>[A-Za-z0-9\-.!%*_+`'~]+)\s+"
    r"(?P<host>\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?:\s*:\s*(?P<port>[0-9]{1,5}))?\s*(?P<params>;.*)?$",
    re.DOTALL,
)


_PORT = re.compile(r"[0-9]{1,5}")
_RPORT_FLAG = re.compile(r";\s*rport\s*(?:;|$)")


@lru_cache(maxsize=1024)
def parse_via(text: str, *, any_version: bool = False) -> Via:
    """A Via value; ``any_version`` accepts SIP/x.y other than 2.0 (to answer them with 505)."""
    m = _VIA.match(text.strip())
    if not m:
        raise ParseError(f"bad Via: {text[:80]!r}")
    version, transport, host, port_text, param_text = m.groups()
    if version != "2.0" and not any_version:
        raise ParseError(f"bad Via: {text[:80]!r}")
    port = int(port_text) if port_text else None
    if port is not None and not 0 < port < 65536:
        raise ParseError("bad Via port")
    params = parse_params(param_text) if param_text else ()
    rport = get_param(params, "rport")
    if rport and not (_PORT.fullmatch(rport) and 0 < int(rport) < 65536):
        raise ParseError("bad Via rport")  # responses are sent to it (RFC 3581)
    return Via(transport.upper(), host, port, params)


def via_sent_by(text: str) -> Via | None:
    """The top Via of a message being refused, read as far as routing an answer needs.

    Any SIP version, and parameters that do not parse are dropped (an "rport" flag is
    kept): enough to send a 400 or 505 back to the sender (RFC 3261 section 18.2.2).
    """
    m = _VIA.match(text.strip())
    if not m:
        return None
    port = int(m["port"]) if m["port"] else None
    if port is not None and not 0 < port < 65536:
        return None
    try:
        params = parse_params(m["params"] or "")
    except ParseError:
        params = (("rport", None),) if _RPORT_FLAG.search(m["params"] or "") else ()
    return Via(m["transport"].upper(), m["host"], port, params)


@dataclass(frozen=True)
class CSeq:
    number: int
    method: str

    def __str__(self) -> str:
        return f"{self.number} {self.method}"


_CSEQ_NUMBER = re.compile(r"[0-9]{1,10}")


@lru_cache(maxsize=1024)  # few distinct values ("1 INVITE", "2 BYE"...); a CSeq is immutable
def parse_cseq(text: str) -> CSeq:
    parts = text.split()
    if len(parts) != 2 or not _CSEQ_NUMBER.fullmatch(parts[0]) or not is_token(parts[1]):
        raise ParseError(f"bad CSeq: {text[:80]!r}")
    number = int(parts[0])
    if number >= 2**31:
        raise ParseError("CSeq number out of range")
    return CSeq(number, parts[1])


def parse_auth_params(text: str) -> tuple[str, dict[str, str]]:
    """'Digest a="1", b=2' -> ('Digest', {'a': '1', 'b': '2'}) with quotes removed."""
    scheme, _, rest = text.strip().partition(" ")
    params: dict[str, str] = {}
    for item in split_commas(rest):
        key, eq, value = item.partition("=")
        key = key.strip().lower()
        if not eq or _token_match(key) is None:
            raise ParseError(f"bad auth parameter {item[:40]!r}")
        value = value.strip()
        if value.startswith('"'):
            if len(value) < 2 or not value.endswith('"'):
                raise ParseError("unterminated quoted auth parameter")
            value = value[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        if key in params:
            raise ParseError(f"duplicate auth parameter {key}")
        params[key] = value
    return scheme, params
