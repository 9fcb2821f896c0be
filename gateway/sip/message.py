"""SIP requests and responses as immutable values.

Headers are kept in order as (canonical name, raw value) pairs, one pair per
comma-separated list element, so a Via or Contact list reads the same whether
it arrived on one line or many. Typed accessors parse on demand and cache; the
parser has already checked the headers every message must have, and hands the
message the values it parsed doing so (``set_parsed_views``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from gateway.sip.headers import (
    EXACT_NAMES,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    parse_cseq,
    parse_name_addr,
    parse_via,
)
from gateway.sip.lazy import once
from gateway.sip.uri import Uri

REASONS: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    181: "Call Is Being Forwarded",
    182: "Queued",
    183: "Session Progress",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    413: "Request Entity Too Large",
    414: "Request-URI Too Long",
    415: "Unsupported Media Type",
    416: "Unsupported URI Scheme",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    484: "Address Incomplete",
    486: "Busy Here",
    487: "Request Terminated",
    488: "Not Acceptable Here",
    491: "Request Pending",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
    604: "Does Not Exist Anywhere",
}


@dataclass(frozen=True)
class Headers:
    items: tuple[tuple[str, str], ...] = ()

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)

    @once
    def by_name(self) -> dict[str, list[str]]:
        """Every value of each header, in order, by name (read-only: the parser hands over
        the one it built while checking the message)."""
        by_name: dict[str, list[str]] = {}
        for key, value in self.items:
            values = by_name.get(key)
            if values is None:
                by_name[key] = [value]
            else:
                values.append(value)
        return by_name

    def get(self, name: str) -> str | None:
        values = self.by_name.get(name) or self._other_spelling(name)
        return values[0] if values else None

    def get_all(self, name: str) -> list[str]:
        values = self.by_name.get(name) or self._other_spelling(name)
        return list(values) if values else []

    def _other_spelling(self, name: str) -> list[str] | None:
        """The values under another spelling of ``name`` ("call-id", "i"); None at once when
        ``name`` is already the canonical one (the header is absent: the usual miss)."""
        canonical = EXACT_NAMES.get(name)
        if canonical == name:
            return None
        return self.by_name.get(canonical or canonical_name(name))

    def __contains__(self, name: object) -> bool:
        return isinstance(name, str) and self.get(name) is not None

    def with_added(self, name: str, value: str, *, first: bool = False) -> Headers:
        pair = ((canonical_name(name), value),)
        return Headers(pair + self.items if first else self.items + pair)

    def without(self, *names: str) -> Headers:
        drop = {canonical_name(n) for n in names}
        return Headers(tuple((k, v) for k, v in self.items if k not in drop))

    def replaced(self, name: str, *values: str) -> Headers:
        """Replace every value of ``name`` with ``values``, at the first one's position."""
        name = canonical_name(name)
        out: list[tuple[str, str]] = []
        placed = False
        for key, value in self.items:
            if key == name:
                if not placed:
                    out.extend((name, v) for v in values)
                    placed = True
                continue
            out.append((key, value))
        if not placed:
            out.extend((name, v) for v in values)
        return Headers(tuple(out))

    def replaced_first(self, name: str, value: str) -> Headers:
        name = EXACT_NAMES.get(name) or canonical_name(name)
        out = list(self.items)
        for i, (key, _value) in enumerate(out):
            if key == name:
                out[i] = (name, value)
                break
        return Headers(tuple(out))

    def without_first(self, name: str) -> Headers:
        name = canonical_name(name)
        out = list(self.items)
        for i, (key, _value) in enumerate(out):
            if key == name:
                del out[i]
                break
        return Headers(tuple(out))


def set_parsed_views(
    message: _Message, vias: list[Via], from_: NameAddr, to: NameAddr, cseq: CSeq, contacts: list[NameAddr]
) -> None:
    """Hand a freshly parsed message the header values the parser already parsed to check
    them: its cached accessors then return these instead of parsing the text again."""
    views = message.__dict__  # where its `once` accessors keep what they computed
    views["vias"] = vias
    views["top_via"] = vias[0]
    views["from_"] = from_
    views["to"] = to
    views["cseq"] = cseq
    views["contacts"] = contacts


def headers_from(pairs: Iterable[tuple[str, str]]) -> Headers:
    return Headers(tuple((canonical_name(k), v) for k, v in pairs))


@dataclass(frozen=True)
class _Message:
    headers: Headers
    body: bytes = field(default=b"", repr=False)

    @once
    def call_id(self) -> str:
        return self.headers.get("Call-ID") or ""

    @once
    def cseq(self) -> CSeq:
        return parse_cseq(self.headers.get("CSeq") or "")

    @once
    def vias(self) -> list[Via]:
        return [parse_via(v) for v in self.headers.get_all("Via")]

    @once
    def top_via(self) -> Via:
        return parse_via(self.headers.get("Via") or "")

    @once
    def from_(self) -> NameAddr:
        return parse_name_addr(self.headers.get("From") or "")

    @once
    def to(self) -> NameAddr:
        return parse_name_addr(self.headers.get("To") or "")

    @once
    def contacts(self) -> list[NameAddr]:
        return [parse_name_addr(v) for v in self.headers.get_all("Contact")]

    @property
    def content_type(self) -> str:
        return (self.headers.get("Content-Type") or "").split(";")[0].strip().lower()

    def _serialize(self, start_line: str) -> bytes:
        lines = [start_line]
        for k, v in self.headers.items:  # a loop: on 3.11 a comprehension is a call of its own
            if k != "Content-Length":
                lines.append(f"{k}: {v}")
        lines.append(f"Content-Length: {len(self.body)}")
        return ("\r\n".join(lines) + "\r\n\r\n").encode() + self.body


@dataclass(frozen=True)
class Request(_Message):
    method: str = ""
    uri: Uri = field(default_factory=lambda: Uri("sip", None, "invalid"))

    def __bytes__(self) -> bytes:
        return self._serialize(f"{self.method} {self.uri} SIP/2.0")

    def with_headers(self, headers: Headers) -> Request:
        # Not dataclasses.replace: it inspects the fields on every call, and every request we
        # send is made this way.
        return Request(headers, self.body, self.method, self.uri)

    def with_top_via(self, via: Via) -> Request:
        """The same request with its first Via replaced (a server transport stamps received and
        rport on every request): the header values already parsed carry over, not parsed again."""
        request = Request(self.headers.replaced_first("Via", str(via)), self.body, self.method, self.uri)
        old, new = self.__dict__, request.__dict__
        for name in ("from_", "to", "cseq", "contacts", "call_id"):
            if name in old:
                new[name] = old[name]
        if "vias" in old:
            new["vias"] = [via, *old["vias"][1:]]
        new["top_via"] = via
        return request


@dataclass(frozen=True)
class Response(_Message):
    status: int = 0
    reason: str = ""

    def __bytes__(self) -> bytes:
        return self._serialize(f"SIP/2.0 {self.status} {self.reason}")

    def with_headers(self, headers: Headers) -> Response:
        return Response(headers, self.body, self.status, self.reason)

    @property
    def is_provisional(self) -> bool:
        return self.status < 200

    @property
    def is_success(self) -> bool:
        return 200 <= self.status < 300


Message = Request | Response


def make_response(
    request: Request,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """A response to ``request`` (RFC 3261 section 8.2.6.2): Via, From, To, Call-ID, CSeq copied."""
    return response_from_headers(request.headers, status, reason, to_tag=to_tag, extra=extra, body=body)


def response_from_headers(
    request_headers: Headers,
    status: int,
    reason: str | None = None,
    *,
    to_tag: str | None = None,
    extra: Iterable[tuple[str, str]] = (),
    body: bytes = b"",
) -> Response:
    """Like make_response, from a request's headers alone (for requests that did not parse)."""
    by_name = request_headers.by_name
    pairs: list[tuple[str, str]] = []
    for via in by_name.get("Via") or request_headers.get_all("Via"):  # a loop: see _serialize
        pairs.append(("Via", via))
    for name in ("From", "To", "Call-ID", "CSeq"):
        values = by_name.get(name)
        value = values[0] if values else request_headers.get(name)
        if value is not None:
            if name == "To" and to_tag and status != 100:
                to = parse_name_addr(value)
                value = value if to.tag else str(to.with_tag(to_tag))
            pairs.append((name, value))
    for k, v in extra:
        pairs.append((EXACT_NAMES.get(k) or canonical_name(k), v))
    return Response(
        headers=Headers(tuple(pairs)),
        body=body,
        status=status,
        reason=reason if reason is not None else REASONS.get(status, "Unknown"),
    )
