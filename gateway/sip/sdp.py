"""SDP (RFC 8866) parsing and the rewrites a media-anchoring B2BUA needs."""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from gateway.sip.errors import SipProtocolError


class SdpError(SipProtocolError):
    def __init__(self, message: str) -> None:
        super().__init__(message, 488)


# Static RTP payload types (RFC 3551) a phone may use without an rtpmap line.
STATIC_PAYLOADS = {"0": "PCMU/8000", "3": "GSM/8000", "8": "PCMA/8000", "9": "G722/8000", "18": "G729/8000"}


@dataclass(frozen=True)
class Media:
    kind: str
    port: int
    proto: str
    formats: tuple[str, ...]
    connection: str | None = None
    attributes: tuple[str, ...] = ()
    other: tuple[str, ...] = ()  # i=, b=, k= lines, kept in order

    def attribute(self, name: str) -> str | None:
        prefix = name + ":"
        for attr in self.attributes:
            if attr == name:
                return ""
            if attr.startswith(prefix):
                return attr[len(prefix) :]
        return None

    def rtpmap(self) -> dict[str, str]:
        out = {pt: STATIC_PAYLOADS[pt] for pt in self.formats if pt in STATIC_PAYLOADS}
        for attr in self.attributes:
            if attr.startswith("rtpmap:"):
                pt, _, encoding = attr[7:].partition(" ")
                out[pt] = encoding.strip()
        return out

    @property
    def direction(self) -> str:
        for d in ("sendrecv", "sendonly", "recvonly", "inactive"):
            if d in self.attributes:
                return d
        return "sendrecv"

    def codec_names(self) -> list[str]:
        mapping = self.rtpmap()
        return [mapping.get(pt, pt).split("/")[0] for pt in self.formats]


@dataclass(frozen=True)
class SessionDescription:
    version: str
    origin: str
    session_name: str
    connection: str | None
    session_lines: tuple[str, ...]  # everything else at session level (t=, a=, b= ...), in order
    media: tuple[Media, ...]

    def connection_address(self, media: Media) -> str | None:
        conn = media.connection or self.connection
        if conn is None:
            return None
        parts = conn.split()
        return parts[2].split("/")[0] if len(parts) >= 3 else None

    def __bytes__(self) -> bytes:
        lines = [f"v={self.version}", f"o={self.origin}", f"s={self.session_name}"]
        if self.connection:
            lines.append(f"c={self.connection}")
        lines.extend(self.session_lines)
        for m in self.media:
            lines.append(f"m={m.kind} {m.port} {m.proto} {' '.join(m.formats)}")
            lines.extend(m.other)
            if m.connection:
                lines.append(f"c={m.connection}")
            lines.extend(f"a={a}" for a in m.attributes)
        return ("\r\n".join(lines) + "\r\n").encode()


@dataclass
class _MediaBuilder:
    kind: str
    port: int
    proto: str
    formats: list[str]
    connection: str | None = None
    attributes: list[str] = field(default_factory=list)
    other: list[str] = field(default_factory=list)

    def build(self) -> Media:
        return Media(
            self.kind,
            self.port,
            self.proto,
            tuple(self.formats),
            self.connection,
            tuple(self.attributes),
            tuple(self.other),
        )


def parse_sdp(data: bytes) -> SessionDescription:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise SdpError("SDP is not UTF-8") from None
    version = origin = session_name = ""
    connection: str | None = None
    session_lines: list[str] = []
    media: list[_MediaBuilder] = []
    for raw in text.replace("\r\n", "\n").split("\n"):
        line = raw.strip()
        if not line:
            continue
        if len(line) < 2 or line[1] != "=":
            raise SdpError(f"bad SDP line {line[:60]!r}")
        kind, value = line[0], line[2:]
        if kind == "m":
            parts = value.split()
            if len(parts) < 4:
                raise SdpError(f"bad m= line {value[:60]!r}")
            port_text = parts[1].split("/")[0]
            if not re.fullmatch(r"[0-9]{1,5}", port_text) or int(port_text) > 65535:
                raise SdpError(f"bad media port {parts[1]!r}")
            media.append(_MediaBuilder(parts[0], int(port_text), parts[2], parts[3:]))
        elif media:
            current = media[-1]
            if kind == "c":
                current.connection = value
            elif kind == "a":
                current.attributes.append(value)
            else:
                current.other.append(line)
        elif kind == "v":
            version = value
        elif kind == "o":
            origin = value
        elif kind == "s":
            session_name = value
        elif kind == "c":
            connection = value
        else:
            session_lines.append(line)
    if version != "0" or not origin:
        raise SdpError("SDP needs v=0 and an o= line")
    return SessionDescription(
        version, origin, session_name or "-", connection, tuple(session_lines), tuple(m.build() for m in media)
    )


def _addr_type(address: str) -> str:
    return "IP6" if ":" in address else "IP4"


# Attributes that describe the far end's transport; they must not cross the anchor.
_TRANSPORT_ATTRIBUTES = ("rtcp:", "candidate:", "ice-", "end-of-candidates", "remote-candidates")


def anchor(sdp: SessionDescription, address: str, ports: list[int], session_version: int) -> SessionDescription:
    """The same offer/answer with every media pointed at our relay (address, one port per m= line).

    A port of 0 (a rejected stream) stays 0. The origin keeps the peer's
    session id but our address and a version we control, so re-offers work.
    """
    if len(ports) != len(sdp.media):
        raise SdpError("one relay port is needed per media line")
    conn = f"IN {_addr_type(address)} {address}"
    new_media = []
    # Built directly, not with dataclasses.replace (which inspects the fields on every call):
    # twice per call set-up.
    for m, port in zip(sdp.media, ports, strict=True):
        attrs = tuple(a for a in m.attributes if not a.startswith(_TRANSPORT_ATTRIBUTES))
        new_media.append(Media(m.kind, port if m.port != 0 else 0, m.proto, m.formats, None, attrs, m.other))
    o = sdp.origin.split()
    if len(o) == 6:
        origin = f"{o[0]} {o[1]} {session_version} IN {_addr_type(address)} {address}"
    else:
        origin = f"seabridge 0 {session_version} IN {_addr_type(address)} {address}"
    return SessionDescription(sdp.version, origin, sdp.session_name, conn, sdp.session_lines, tuple(new_media))


def media_endpoints(sdp: SessionDescription) -> list[tuple[str, int] | None]:
    """Where each media line asks to receive RTP (None for rejected or unaddressed streams)."""
    out: list[tuple[str, int] | None] = []
    for m in sdp.media:
        addr = sdp.connection_address(m)
        if m.port == 0 or addr is None:
            out.append(None)
        else:
            out.append((addr, m.port))
    return out


def telephone_event_payload(sdp: SessionDescription) -> int | None:
    """The RTP payload type this side wants RFC 4733 events in (audio, 8 kHz), if any."""
    for m in sdp.media:
        if m.kind != "audio" or not m.port:
            continue
        for pt, encoding in m.rtpmap().items():
            if encoding.lower().startswith("telephone-event/8000") and pt.isdigit():
                return int(pt)
    return None


def first_codec(sdp: SessionDescription) -> str:
    for m in sdp.media:
        if m.port and m.formats:
            names = [n for n in m.codec_names() if n.lower() != "telephone-event"]
            if names:
                return names[0]
    return ""


def sdp_of(content_type_header: str, body: bytes) -> bytes | None:
    """The SDP in a message body: the body itself, or the application/sdp part of a multipart body.

    Carrier trunks send multipart/mixed bodies (SDP plus ISUP, RFC 3204); the SDP part is what we
    negotiate media with and the other parts are not forwarded.
    """
    media_type, _, params = content_type_header.partition(";")
    media_type = media_type.strip().lower()
    if media_type == "application/sdp":
        return body
    if not media_type.startswith("multipart/"):
        return None
    boundary = ""
    for param in params.split(";"):
        key, _, value = param.strip().partition("=")
        if key.strip().lower() == "boundary":
            boundary = value.strip().strip('"')
    if not boundary:
        return None
    for part in body.split(b"--" + boundary.encode())[1:]:
        if part.startswith(b"--"):
            break  # the closing delimiter
        head, sep, content = part.lstrip(b"\r\n").partition(b"\r\n\r\n")
        if not sep:
            continue
        headers = head.decode("latin-1").lower()
        if any(line.split(":", 1)[0].strip() == "content-type" and "application/sdp" in line
               for line in headers.splitlines()):  # fmt: skip
            return content.rstrip(b"\r\n") + b"\r\n"
    return None
