"""RTP (RFC 3550), RTCP (SR, RR, SDES, BYE, APP) and RFC 4733 telephone events, as values.

Every packet is a frozen dataclass: ``Type.parse(data)`` reads one from bytes
(raising ``PacketError`` on anything malformed, never another exception) and
``bytes(packet)`` writes it back. A well-formed packet round-trips exactly,
except that RTCP padding is dropped on parse (no sender needs it back).

The relay itself forwards payloads untouched and never calls this module on
its hot path; this is for the parts that look inside packets (DTMF, RTCP
statistics, tests).
"""

from __future__ import annotations

import struct
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import ClassVar, Self

from media.errors import PacketError

__all__ = [
    "RTP_VERSION",
    "AppPacket",
    "Bye",
    "ReceiverReport",
    "ReportBlock",
    "RtcpPacket",
    "RtpExtension",
    "RtpPacket",
    "SdesChunk",
    "SdesItem",
    "SenderReport",
    "SourceDescription",
    "TelephoneEvent",
    "UnknownRtcp",
    "dtmf_events",
    "is_rtcp",
    "parse_rtcp",
    "serialize_rtcp",
]

RTP_VERSION = 2

_RTP_HEADER = struct.Struct("!BBHII")
_RTCP_HEADER = struct.Struct("!BBH")
_REPORT_BLOCK = struct.Struct("!IB3sIIII")
_SENDER_INFO = struct.Struct("!IQIII")
_EVENT = struct.Struct("!BBH")

# RTCP packet types (RFC 3550 section 12.1).
PT_SR = 200
PT_RR = 201
PT_SDES = 202
PT_BYE = 203
PT_APP = 204

# SDES item types (RFC 3550 section 12.2).
SDES_END = 0
SDES_CNAME = 1
SDES_NAME = 2
SDES_EMAIL = 3
SDES_PHONE = 4
SDES_LOC = 5
SDES_TOOL = 6
SDES_NOTE = 7
SDES_PRIV = 8


def _u32(value: int, name: str) -> None:
    if not 0 <= value <= 0xFFFFFFFF:
        raise ValueError(f"{name} must fit in 32 bits, got {value}")


def _pad4(n: int) -> int:
    return (4 - n % 4) % 4


# --- RTP ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RtpExtension:
    """An RTP header extension (RFC 3550 section 5.3.1): a 16-bit profile and whole 32-bit words."""

    profile: int
    data: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.profile <= 0xFFFF:
            raise ValueError("extension profile must fit in 16 bits")
        if len(self.data) % 4 or len(self.data) > 4 * 0xFFFF:
            raise ValueError("extension data must be whole 32-bit words")


@dataclass(frozen=True)
class RtpPacket:
    payload_type: int
    sequence: int
    timestamp: int
    ssrc: int
    payload: bytes = b""
    marker: bool = False
    csrc: tuple[int, ...] = ()
    extension: RtpExtension | None = None
    # Bytes of padding after the payload, the count byte included (0 = none).
    padding: int = 0

    def __post_init__(self) -> None:
        if not 0 <= self.payload_type <= 127:
            raise ValueError("payload_type must be 0..127")
        if not 0 <= self.sequence <= 0xFFFF:
            raise ValueError("sequence must fit in 16 bits")
        _u32(self.timestamp, "timestamp")
        _u32(self.ssrc, "ssrc")
        if len(self.csrc) > 15:
            raise ValueError("at most 15 CSRCs")
        for c in self.csrc:
            _u32(c, "csrc")
        if not 0 <= self.padding <= 255:
            raise ValueError("padding must be 0..255")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if len(data) < _RTP_HEADER.size:
            raise PacketError(f"RTP packet of {len(data)} bytes is shorter than its 12-byte header")
        b0, b1, sequence, timestamp, ssrc = _RTP_HEADER.unpack_from(data)
        if b0 >> 6 != RTP_VERSION:
            raise PacketError(f"RTP version {b0 >> 6}, expected 2")
        pos = _RTP_HEADER.size
        cc = b0 & 0x0F
        if len(data) < pos + 4 * cc:
            raise PacketError("RTP packet truncated in its CSRC list")
        csrc = struct.unpack_from(f"!{cc}I", data, pos)
        pos += 4 * cc
        extension = None
        if b0 & 0x10:
            if len(data) < pos + 4:
                raise PacketError("RTP packet truncated in its header extension")
            profile, words = struct.unpack_from("!HH", data, pos)
            pos += 4
            if len(data) < pos + 4 * words:
                raise PacketError("RTP header extension runs past the packet")
            extension = RtpExtension(profile, bytes(data[pos : pos + 4 * words]))
            pos += 4 * words
        end = len(data)
        padding = 0
        if b0 & 0x20:
            padding = data[-1]
            if padding == 0 or end - padding < pos:
                raise PacketError(f"RTP padding count {padding} does not fit the packet")
            end -= padding
        return cls(
            payload_type=b1 & 0x7F,
            sequence=sequence,
            timestamp=timestamp,
            ssrc=ssrc,
            payload=bytes(data[pos:end]),
            marker=bool(b1 & 0x80),
            csrc=tuple(csrc),
            extension=extension,
            padding=padding,
        )

    def __bytes__(self) -> bytes:
        b0 = RTP_VERSION << 6 | len(self.csrc)
        if self.padding:
            b0 |= 0x20
        if self.extension is not None:
            b0 |= 0x10
        b1 = self.payload_type | (0x80 if self.marker else 0)
        parts = [_RTP_HEADER.pack(b0, b1, self.sequence, self.timestamp, self.ssrc)]
        parts.append(struct.pack(f"!{len(self.csrc)}I", *self.csrc))
        if self.extension is not None:
            ext = self.extension
            parts.append(struct.pack("!HH", ext.profile, len(ext.data) // 4) + ext.data)
        parts.append(self.payload)
        if self.padding:
            parts.append(bytes(self.padding - 1) + bytes([self.padding]))
        return b"".join(parts)


def is_rtcp(data: bytes) -> bool:
    """Whether a datagram on a muxed port is RTCP (RFC 5761 section 4: second byte 192..223)."""
    return len(data) >= 2 and 192 <= data[1] <= 223


# --- RTCP --------------------------------------------------------------------------------


def _rtcp_header(count: int, packet_type: int, body_len: int) -> bytes:
    if body_len % 4:
        raise ValueError("RTCP body must be whole 32-bit words")
    return _RTCP_HEADER.pack(RTP_VERSION << 6 | count, packet_type, body_len // 4)


def _split_header(data: bytes, expected_type: int) -> tuple[int, bytes]:
    """Check one packet's header; return its count field and body (padding removed)."""
    if len(data) < 4:
        raise PacketError("RTCP packet shorter than its 4-byte header")
    b0, packet_type, words = _RTCP_HEADER.unpack_from(data)
    if b0 >> 6 != RTP_VERSION:
        raise PacketError(f"RTCP version {b0 >> 6}, expected 2")
    if packet_type != expected_type:
        raise PacketError(f"RTCP packet type {packet_type}, expected {expected_type}")
    size = 4 * (words + 1)
    if size != len(data):
        raise PacketError(f"RTCP length field says {size} bytes, packet has {len(data)}")
    end = size
    if b0 & 0x20:
        pad = data[-1]
        if pad == 0 or pad > size - 4:
            raise PacketError(f"RTCP padding count {pad} does not fit the packet")
        end -= pad
    return b0 & 0x1F, bytes(data[4:end])


@dataclass(frozen=True)
class ReportBlock:
    """Reception statistics about one source (RFC 3550 section 6.4.1)."""

    ssrc: int
    fraction_lost: int
    packets_lost: int  # cumulative, signed 24-bit (duplicates can make it negative)
    highest_sequence: int
    jitter: int
    lsr: int
    dlsr: int

    SIZE: ClassVar[int] = _REPORT_BLOCK.size

    def __post_init__(self) -> None:
        if not 0 <= self.fraction_lost <= 255:
            raise ValueError("fraction_lost must be 0..255")
        if not -(1 << 23) <= self.packets_lost < 1 << 23:
            raise ValueError("packets_lost must fit in signed 24 bits")
        for name in ("ssrc", "highest_sequence", "jitter", "lsr", "dlsr"):
            _u32(getattr(self, name), name)

    @classmethod
    def parse(cls, data: bytes) -> Self:
        if len(data) != cls.SIZE:
            raise PacketError(f"report block must be {cls.SIZE} bytes, got {len(data)}")
        ssrc, fraction, lost, highest, jitter, lsr, dlsr = _REPORT_BLOCK.unpack(data)
        return cls(ssrc, fraction, int.from_bytes(lost, "big", signed=True), highest, jitter, lsr, dlsr)

    def __bytes__(self) -> bytes:
        lost = self.packets_lost.to_bytes(3, "big", signed=True)
        return _REPORT_BLOCK.pack(
            self.ssrc, self.fraction_lost, lost, self.highest_sequence, self.jitter, self.lsr, self.dlsr
        )


def _parse_blocks(body: bytes, count: int, at: int) -> tuple[tuple[ReportBlock, ...], bytes]:
    end = at + count * ReportBlock.SIZE
    if len(body) < end:
        raise PacketError(f"RTCP report announces {count} blocks but is too short for them")
    blocks = tuple(ReportBlock.parse(body[i : i + ReportBlock.SIZE]) for i in range(at, end, ReportBlock.SIZE))
    return blocks, body[end:]


@dataclass(frozen=True)
class SenderReport:
    PACKET_TYPE: ClassVar[int] = PT_SR

    ssrc: int
    ntp_timestamp: int  # 64-bit NTP format: seconds since 1900 << 32 | fraction
    rtp_timestamp: int
    packet_count: int
    octet_count: int
    reports: tuple[ReportBlock, ...] = ()
    # Profile-specific extension words after the report blocks, kept as they came.
    extension: bytes = b""

    def __post_init__(self) -> None:
        if len(self.reports) > 31:
            raise ValueError("at most 31 report blocks per packet")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        count, body = _split_header(data, PT_SR)
        if len(body) < _SENDER_INFO.size:
            raise PacketError("sender report too short for its sender info")
        ssrc, ntp, rtp_ts, packets, octets = _SENDER_INFO.unpack_from(body)
        reports, rest = _parse_blocks(body, count, _SENDER_INFO.size)
        return cls(ssrc, ntp, rtp_ts, packets, octets, reports, rest)

    def __bytes__(self) -> bytes:
        body = _SENDER_INFO.pack(self.ssrc, self.ntp_timestamp, self.rtp_timestamp, self.packet_count, self.octet_count)
        body += b"".join(bytes(r) for r in self.reports) + self.extension
        return _rtcp_header(len(self.reports), PT_SR, len(body)) + body


@dataclass(frozen=True)
class ReceiverReport:
    PACKET_TYPE: ClassVar[int] = PT_RR

    ssrc: int
    reports: tuple[ReportBlock, ...] = ()
    extension: bytes = b""

    def __post_init__(self) -> None:
        if len(self.reports) > 31:
            raise ValueError("at most 31 report blocks per packet")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        count, body = _split_header(data, PT_RR)
        if len(body) < 4:
            raise PacketError("receiver report too short for its SSRC")
        (ssrc,) = struct.unpack_from("!I", body)
        reports, rest = _parse_blocks(body, count, 4)
        return cls(ssrc, reports, rest)

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + b"".join(bytes(r) for r in self.reports) + self.extension
        return _rtcp_header(len(self.reports), PT_RR, len(body)) + body


@dataclass(frozen=True)
class SdesItem:
    kind: int  # SDES_CNAME, SDES_NAME, ...
    value: bytes

    def __post_init__(self) -> None:
        if not 1 <= self.kind <= 255:
            raise ValueError("SDES item type must be 1..255 (0 ends a chunk)")
        if len(self.value) > 255:
            raise ValueError("SDES item value is at most 255 bytes")


@dataclass(frozen=True)
class SdesChunk:
    ssrc: int
    items: tuple[SdesItem, ...] = ()

    def __bytes__(self) -> bytes:
        out = struct.pack("!I", self.ssrc)
        out += b"".join(bytes([item.kind, len(item.value)]) + item.value for item in self.items)
        # At least one zero octet ends the item list, then pad to a 32-bit boundary.
        out += b"\x00"
        return out + bytes(_pad4(len(out)))


@dataclass(frozen=True)
class SourceDescription:
    PACKET_TYPE: ClassVar[int] = PT_SDES

    chunks: tuple[SdesChunk, ...] = ()

    def __post_init__(self) -> None:
        if len(self.chunks) > 31:
            raise ValueError("at most 31 chunks per SDES packet")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        count, body = _split_header(data, PT_SDES)
        chunks = []
        pos = 0
        for _ in range(count):
            if pos + 4 > len(body):
                raise PacketError("SDES packet truncated before a chunk's SSRC")
            (ssrc,) = struct.unpack_from("!I", body, pos)
            pos += 4
            items = []
            while True:
                if pos >= len(body):
                    raise PacketError("SDES chunk has no terminating null item")
                kind = body[pos]
                if kind == SDES_END:
                    pos += 1
                    pos += _pad4(pos)
                    break
                if pos + 2 > len(body) or pos + 2 + body[pos + 1] > len(body):
                    raise PacketError("SDES item runs past the packet")
                length = body[pos + 1]
                items.append(SdesItem(kind, body[pos + 2 : pos + 2 + length]))
                pos += 2 + length
            chunks.append(SdesChunk(ssrc, tuple(items)))
        if pos > len(body) or any(body[pos:]):
            raise PacketError("SDES packet has bytes after its last chunk")
        return cls(tuple(chunks))

    def __bytes__(self) -> bytes:
        body = b"".join(bytes(c) for c in self.chunks)
        return _rtcp_header(len(self.chunks), PT_SDES, len(body)) + body

    def cname(self, ssrc: int) -> bytes | None:
        for chunk in self.chunks:
            if chunk.ssrc == ssrc:
                for item in chunk.items:
                    if item.kind == SDES_CNAME:
                        return item.value
        return None


@dataclass(frozen=True)
class Bye:
    PACKET_TYPE: ClassVar[int] = PT_BYE

    sources: tuple[int, ...]
    reason: bytes | None = None

    def __post_init__(self) -> None:
        if len(self.sources) > 31:
            raise ValueError("at most 31 sources per BYE")
        if self.reason is not None and len(self.reason) > 255:
            raise ValueError("BYE reason is at most 255 bytes")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        count, body = _split_header(data, PT_BYE)
        if len(body) < 4 * count:
            raise PacketError(f"BYE announces {count} sources but is too short for them")
        sources = struct.unpack_from(f"!{count}I", body)
        rest = body[4 * count :]
        reason = None
        if rest:
            length = rest[0]
            if 1 + length > len(rest):
                raise PacketError("BYE reason runs past the packet")
            reason = rest[1 : 1 + length]
        return cls(tuple(sources), reason)

    def __bytes__(self) -> bytes:
        body = struct.pack(f"!{len(self.sources)}I", *self.sources)
        if self.reason is not None:
            reason = bytes([len(self.reason)]) + self.reason
            body += reason + bytes(_pad4(len(reason)))
        return _rtcp_header(len(self.sources), PT_BYE, len(body)) + body


@dataclass(frozen=True)
class AppPacket:
    PACKET_TYPE: ClassVar[int] = PT_APP

    subtype: int
    ssrc: int
    name: bytes  # four ASCII characters
    data: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.subtype <= 31:
            raise ValueError("APP subtype must be 0..31")
        if len(self.name) != 4:
            raise ValueError("APP name must be 4 bytes")
        if len(self.data) % 4:
            raise ValueError("APP data must be whole 32-bit words")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        subtype, body = _split_header(data, PT_APP)
        if len(body) < 8:
            raise PacketError("APP packet too short for its SSRC and name")
        (ssrc,) = struct.unpack_from("!I", body)
        return cls(subtype, ssrc, body[4:8], body[8:])

    def __bytes__(self) -> bytes:
        body = struct.pack("!I", self.ssrc) + self.name + self.data
        return _rtcp_header(self.subtype, PT_APP, len(body)) + body


@dataclass(frozen=True)
class UnknownRtcp:
    """Any other RTCP packet (feedback, XR ...), kept whole so it can be passed on unchanged."""

    packet_type: int
    count: int
    body: bytes = field(default=b"")

    @classmethod
    def parse(cls, data: bytes) -> Self:
        packet_type = data[1] if len(data) > 1 else 0
        count, body = _split_header(data, packet_type)
        return cls(packet_type, count, body)

    def __bytes__(self) -> bytes:
        return _rtcp_header(self.count, self.packet_type, len(self.body)) + self.body


RtcpPacket = SenderReport | ReceiverReport | SourceDescription | Bye | AppPacket | UnknownRtcp

_RTCP_TYPES: dict[int, type[SenderReport | ReceiverReport | SourceDescription | Bye | AppPacket]] = {
    cls.PACKET_TYPE: cls for cls in (SenderReport, ReceiverReport, SourceDescription, Bye, AppPacket)
}


def parse_rtcp(data: bytes) -> tuple[RtcpPacket, ...]:
    """Split a compound RTCP datagram into its packets (RFC 3550 section 6.1)."""
    packets: list[RtcpPacket] = []
    pos = 0
    if not data:
        raise PacketError("empty RTCP datagram")
    while pos < len(data):
        if len(data) - pos < 4:
            raise PacketError("RTCP datagram ends inside a packet header")
        (words,) = struct.unpack_from("!H", data, pos + 2)
        end = pos + 4 * (words + 1)
        if end > len(data):
            raise PacketError("RTCP packet length runs past the datagram")
        if data[pos] & 0x20 and end != len(data):
            raise PacketError("only the last packet of a compound RTCP datagram may be padded")
        one = bytes(data[pos:end])
        packets.append(_RTCP_TYPES.get(one[1], UnknownRtcp).parse(one))
        pos = end
    return tuple(packets)


def serialize_rtcp(packets: Iterable[RtcpPacket]) -> bytes:
    return b"".join(bytes(p) for p in packets)


# --- RFC 4733 telephone events ------------------------------------------------------------

_DTMF = "0123456789*#ABCD"


@dataclass(frozen=True)
class TelephoneEvent:
    """One telephone-event payload (RFC 4733 section 2.3): 4 bytes."""

    event: int
    end: bool
    volume: int  # power level in -dBm0, 0..63
    duration: int  # in RTP timestamp units since the event began

    def __post_init__(self) -> None:
        if not 0 <= self.event <= 255:
            raise ValueError("event must be 0..255")
        if not 0 <= self.volume <= 63:
            raise ValueError("volume must be 0..63")
        if not 0 <= self.duration <= 0xFFFF:
            raise ValueError("duration must fit in 16 bits")

    @classmethod
    def parse(cls, payload: bytes) -> Self:
        # Several events may be stacked (redundancy); the first is the current one.
        if len(payload) < _EVENT.size:
            raise PacketError(f"telephone-event payload of {len(payload)} bytes, need 4")
        event, flags, duration = _EVENT.unpack_from(payload)
        return cls(event, bool(flags & 0x80), flags & 0x3F, duration)

    def __bytes__(self) -> bytes:
        return _EVENT.pack(self.event, (0x80 if self.end else 0) | self.volume, self.duration)

    @property
    def digit(self) -> str | None:
        """The DTMF key (events 0-15), or None for other events."""
        return _DTMF[self.event] if self.event < len(_DTMF) else None

    @staticmethod
    def event_for_digit(digit: str) -> int:
        index = _DTMF.find(digit.upper()) if len(digit) == 1 else -1
        if index < 0:
            raise ValueError(f"{digit!r} is not a DTMF key")
        return index


def dtmf_events(
    digit: str, *, duration: int = 800, step: int = 160, volume: int = 10, end_repeats: int = 3
) -> Sequence[TelephoneEvent]:
    """The payloads that signal one key press, in sending order.

    One packet per ``step`` timestamp units with a growing duration, then the
    final packet (E bit set) sent ``end_repeats`` times, as RFC 4733 section
    2.5.1.4 recommends, since a lost end packet would leave the key pressed.
    All share the timestamp of the event's start; the first carries the marker.
    """
    if duration < step or step <= 0:
        raise ValueError("duration must be at least one step, and step positive")
    event = TelephoneEvent.event_for_digit(digit)
    events = [TelephoneEvent(event, False, volume, d) for d in range(step, duration, step)]
    events += [TelephoneEvent(event, True, volume, duration)] * end_repeats
    return events
