"""Bytes -> Request | Response, strictly, with caps; never raises anything but ParseError.

On a request we cannot accept, ``ParseError.status`` says what to answer and
``ParseError.partial`` holds whatever headers we could read, so the caller can
build that answer (it needs Via, From, To, Call-ID and CSeq) or drop the
datagram when even those are missing.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from gateway.sip.errors import ParseError
from gateway.sip.headers import (
    HEADER_FORMS,
    LIST_HEADERS,
    CSeq,
    NameAddr,
    Via,
    canonical_name,
    is_token,
    parse_cseq,
    parse_name_addr,
    parse_via,
    split_commas,
    via_sent_by,
)
from gateway.sip.message import Headers, Request, Response, set_parsed_views
from gateway.sip.uri import parse_uri


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 65535
    max_headers: int = 128
    max_header_line: int = 8192
    max_uri: int = 1024


DEFAULT_LIMITS = Limits()

_TOKEN_CHARS = r"A-Za-z0-9\-.!%*_+`'~"
_REQUEST_LINE = re.compile(rf"^([{_TOKEN_CHARS}]+) (\S+) (SIP/[0-9]+\.[0-9]+)$")
# A start line that is meant as a request but breaks the grammar (extra or trailing SP,
# LWS inside the Request-URI: RFC 4475 3.1.2.8-10): answered 400 rather than dropped.
_LOOSE_REQUEST_LINE = re.compile(rf"^[{_TOKEN_CHARS}]+ .*SIP/[0-9]+\.[0-9]+ *$")
# Status-Code is exactly three digits and a SP must follow it (RFC 3261 section 7.2);
# "SIP/2.0 100" with nothing after is tolerated, "SIP/2.0 4294967301 ..." is not a status.
_STATUS_LINE = re.compile(r"^(SIP/[0-9]+\.[0-9]+) ([0-9]{3})(?: (.*))?$")
# Numbers are ASCII digits, few enough for int() (str.isdigit() also accepts "²" and "٣",
# and int() refuses strings over 4300 digits).
_NUMBER = re.compile(r"[0-9]{1,10}")
_EXPIRES = re.compile(r"[0-9]{1,32}")
_MANDATORY = ("Via", "From", "To", "Call-ID", "CSeq")
MAGIC_COOKIE = "z9hG4bK"


class SipParseError(ParseError):
    """``partial`` holds the headers read so far; ``reply_via`` is their top Via when it is
    usable to route an error response back (None: drop the message silently)."""

    def __init__(
        self, message: str, status: int = 400, partial: Headers | None = None, is_request: bool = True
    ) -> None:
        super().__init__(message, status)
        self.partial = partial
        self.is_request = is_request
        self.reply_via: Via | None = _reply_via(partial) if is_request else None


def parse_message(data: bytes, limits: Limits = DEFAULT_LIMITS) -> Request | Response:
    if len(data) > limits.max_message_bytes:
        raise SipParseError("message too large", 513)
    head_end = data.find(b"\r\n\r\n")
    sep_len = 4
    if head_end < 0:
        # Tolerate bare LF line ends (RFC 3261 section 7.5 says CRLF, but some phones send LF).
        head_end = data.find(b"\n\n")
        sep_len = 2
        if head_end < 0:
            raise SipParseError("no end of headers")
    try:
        head = data[:head_end].decode("utf-8")
    except UnicodeDecodeError:
        raise SipParseError("headers are not UTF-8") from None
    body = data[head_end + sep_len :]
    lines = head.replace("\r\n", "\n").split("\n")
    while lines and not lines[0]:
        lines.pop(0)  # RFC 3261 section 7.5: ignore CRLFs before the start line
    if not lines:
        raise SipParseError("empty message")
    start, header_lines = lines[0], lines[1:]
    folded = "\n " in head or "\n\t" in head

    m = _REQUEST_LINE.match(start)
    sm = None if m else _STATUS_LINE.match(start)
    if m is None and sm is None:
        if _LOOSE_REQUEST_LINE.match(start):
            headers, _index = _parse_headers(header_lines, limits, True, folded)
            raise SipParseError(f"malformed Request-Line {start[:80]!r}", 400, headers)
        raise SipParseError(f"bad start line {start[:80]!r}", 400, is_request=not start.startswith("SIP/"))
    is_request = m is not None
    headers, index = _parse_headers(header_lines, limits, is_request, folded)
    body = _check_body(headers, index, body, is_request)

    if m:
        method, uri_text, version = m.groups()
        if version != "SIP/2.0":
            raise SipParseError(f"unsupported version {version}", 505, headers)
        if len(uri_text) > limits.max_uri:
            raise SipParseError("Request-URI too long", 414, headers)
        try:
            uri = parse_uri(uri_text)
        except ParseError as exc:
            raise SipParseError(str(exc), 400, headers) from None
        if uri.scheme not in ("sip", "sips", "tel"):
            raise SipParseError(f"unsupported URI scheme {uri.scheme}", 416, headers)
        if uri.headers:
            # Header fields belong in the message, never in a Request-URI (RFC 3261 19.1.1).
            raise SipParseError("Request-URI with escaped headers", 400, headers)
        views = _check_mandatory(headers, index, method)
        request = Request(headers=headers, body=body, method=method, uri=uri)
        set_parsed_views(request, *views)
        return request

    assert sm is not None
    version, status_text, reason = sm.groups()
    if version != "SIP/2.0":
        raise SipParseError(f"unsupported version {version}", 505, headers, is_request=False)
    status = int(status_text)
    if not 100 <= status <= 699:
        raise SipParseError("status code out of range", 400, headers, is_request=False)
    views = _check_mandatory(headers, index, None)
    response = Response(headers=headers, body=body, status=status, reason=reason or "")
    set_parsed_views(response, *views)
    return response


# Every value of each header, by canonical name, in order: built with the header list so
# the checks below look a header up once instead of scanning the list for each.
_Index = dict[str, list[str]]


def _parse_headers(lines: list[str], limits: Limits, is_request: bool, folded: bool = True) -> tuple[Headers, _Index]:
    """``folded`` False promises that no line starts with SP or HTAB (nothing to unfold)."""
    unfolded: list[str] = [] if folded else lines
    if folded:
        for line in lines:
            if line[:1] in (" ", "\t"):
                if not unfolded:
                    raise SipParseError("continuation line before any header")
                unfolded[-1] += " " + line.strip()
            else:
                unfolded.append(line)
    if len(unfolded) > limits.max_headers:
        raise SipParseError("too many headers", 400)
    pairs: list[tuple[str, str]] = []
    index: _Index = {}
    max_line = limits.max_header_line
    for line in unfolded:
        if len(line) > max_line:
            raise SipParseError("header line too long", 400, Headers(tuple(pairs)), is_request)
        name, colon, value = line.partition(":")
        name = name.strip()
        form = HEADER_FORMS.get(name)
        if form is not None and colon:
            name, is_list = form  # a known name, so a token
        else:
            if not colon or not is_token(name):
                raise SipParseError(f"bad header line {line[:80]!r}", 400, Headers(tuple(pairs)), is_request)
            name = canonical_name(name)
            is_list = name.lower() in LIST_HEADERS
        value = value.strip()
        if is_list:
            try:
                items = split_commas(value)
            except ParseError as exc:
                raise SipParseError(str(exc), 400, Headers(tuple(pairs)), is_request) from None
            if len(items) == 1:
                pairs.append((name, items[0]))
            elif items:
                pairs.extend([(name, item) for item in items])
            else:
                continue  # an empty list adds no value: the header stays absent
        else:
            pairs.append((name, value))
            items = [value]
        values = index.get(name)
        if values is None:
            index[name] = items
        else:
            values.extend(items)
    headers = Headers(tuple(pairs))
    headers.__dict__["by_name"] = index  # what its cached property would build again
    return headers, index


def _check_body(headers: Headers, index: _Index, body: bytes, is_request: bool) -> bytes:
    lengths = index.get("Content-Length")
    if not lengths:
        return body  # allowed over UDP: the datagram ends the body
    if len(set(lengths)) != 1 or not _NUMBER.fullmatch(lengths[0]):
        raise SipParseError("bad Content-Length", 400, headers, is_request)
    length = int(lengths[0])
    if length > len(body):
        raise SipParseError("Content-Length larger than the body received", 400, headers, is_request)
    return body[:length]


_SINGLE = ("From", "To", "Call-ID", "CSeq", "Max-Forwards", "Content-Type", "Expires")


def _check_mandatory(
    headers: Headers, index: _Index, method: str | None
) -> tuple[list[Via], NameAddr, NameAddr, CSeq, list[NameAddr]]:
    """Refuse what every message must have right; return what was parsed doing so (the
    message's Vias, From, To, CSeq and Contacts), so that its accessors need not parse again."""
    is_request = method is not None
    for name in _MANDATORY:
        if name not in index:
            raise SipParseError(f"missing {name}", 400, headers, is_request)
    for single in _SINGLE:
        values = index.get(single)
        if values is not None and len(values) > 1:
            raise SipParseError(f"more than one {single}", 400, headers, is_request)
    try:
        # map, not comprehensions: on 3.11 a comprehension is a call of its own, and the
        # parse functions are cached, so a hit is no Python call at all.
        vias = list(map(parse_via, index["Via"]))
        from_ = parse_name_addr(index["From"][0])
        to = parse_name_addr(index["To"][0])
        cseq = parse_cseq(index["CSeq"][0])
        contacts = list(map(parse_name_addr, index.get("Contact", ())))
    except ParseError as exc:
        raise SipParseError(str(exc), 400, headers, is_request) from None
    if method is not None and cseq.method != method:
        raise SipParseError("CSeq method does not match the request method", 400, headers)
    if method is not None and vias[0].branch == MAGIC_COOKIE:
        # The RFC 3261 cookie with no identifier after it (RFC 4475 3.2.1): refused, since
        # every such request from the peer would otherwise share one transaction.
        raise SipParseError("Via branch has no transaction identifier", 400, headers)
    max_forwards = index.get("Max-Forwards")
    if max_forwards is not None and (not _NUMBER.fullmatch(max_forwards[0]) or int(max_forwards[0]) > 255):
        raise SipParseError("bad Max-Forwards", 400, headers, is_request)
    expires = index.get("Expires")
    if expires is not None and not _EXPIRES.fullmatch(expires[0]):
        raise SipParseError("bad Expires", 400, headers, is_request)
    return vias, from_, to, cseq, contacts


def can_answer(headers: Headers | None) -> bool:
    """Whether a partial header set has what a response needs to reach the sender."""
    return _reply_via(headers) is not None


def _reply_via(headers: Headers | None) -> Via | None:
    # Only the top Via is needed to route the answer (RFC 3261 section 18.2.2); any SIP
    # version is accepted there so that a SIP/7.0 request still gets its 505.
    if headers is None:
        return None
    top = headers.get("Via")
    return via_sent_by(top) if top is not None else None


__all__ = ["DEFAULT_LIMITS", "MAGIC_COOKIE", "Limits", "SipParseError", "can_answer", "parse_message", "canonical_name"]
