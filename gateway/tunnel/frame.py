"""The media channel's datagram frame: an 18-byte header, then AEAD ciphertext and tag.

    0        1        2-5       6-11        12-15     16-17
    ver|type class|fl key id    link seq    flow id   flow seq

- ``key id`` is chosen by the receiver for one link and one key generation (like an
  IPsec SPI), so one UDP socket serves many peers and a key rotation is visible.
- ``link seq`` counts frames sent under one key: it makes the nonce and feeds the
  replay window. ``flow seq`` counts frames of one flow on this hop (wrapping at
  2**16): retransmission and de-duplication work on it.
- The whole header is the AEAD's associated data, so none of it can be altered.

The header is a NamedTuple rather than a dataclass because it is built and parsed
for every packet (a tuple is several times cheaper to make) and is still immutable.
"""

from __future__ import annotations

import struct
from enum import IntEnum, IntFlag
from typing import NamedTuple

from gateway.tunnel.errors import FrameError

VERSION = 1
HEADER_SIZE = 18
TAG_SIZE = 16
OVERHEAD = HEADER_SIZE + TAG_SIZE

_HEADER = struct.Struct("!BBIHIIH")


class FrameType(IntEnum):
    DATA = 0
    PROBE = 1
    PROBE_REPLY = 2
    NACK = 3


class TrafficClass(IntEnum):
    """Priority order, highest first, is CONTROL, VOICE, VIDEO, TV (see ``classes``)."""

    CONTROL = 0
    VOICE = 1
    VIDEO = 2
    TV = 3


class Flags(IntFlag):
    NONE = 0
    RETRANSMIT = 1
    DUPLICATE = 2


class Header(NamedTuple):
    type: FrameType
    traffic_class: TrafficClass
    flags: Flags
    key_id: int
    seq: int
    flow_id: int
    flow_seq: int

    def pack(self) -> bytes:
        return _HEADER.pack(
            (VERSION << 4) | self.type,
            (self.traffic_class << 5) | self.flags,
            self.key_id,
            self.seq >> 32,
            self.seq & 0xFFFFFFFF,
            self.flow_id,
            self.flow_seq,
        )


def parse_header(data: bytes) -> Header:
    if len(data) < OVERHEAD:
        raise FrameError(f"frame of {len(data)} bytes is shorter than the {OVERHEAD}-byte minimum")
    b0, b1, key_id, seq_hi, seq_lo, flow_id, flow_seq = _HEADER.unpack_from(data)
    if b0 >> 4 != VERSION:
        raise FrameError(f"unsupported frame version {b0 >> 4}")
    try:
        frame_type = FrameType(b0 & 0x0F)
        traffic_class = TrafficClass(b1 >> 5)
    except ValueError:
        raise FrameError("unknown frame type or traffic class") from None
    return Header(frame_type, traffic_class, Flags(b1 & 0x1F), key_id, (seq_hi << 32) | seq_lo, flow_id, flow_seq)


def peek_key_id(data: bytes) -> int | None:
    """The key id of a datagram, to find its link before parsing it fully."""
    if len(data) < OVERHEAD:
        return None
    return int.from_bytes(data[2:6], "big")


# Payloads of the non-DATA frame types (inside the encryption).

_PROBE = struct.Struct("!IdB")


class Probe(NamedTuple):
    """A path probe or its reply: the reply echoes ``probe_id`` and ``sent_at`` unchanged."""

    path: str
    probe_id: int
    sent_at: float

    def pack(self) -> bytes:
        name = self.path.encode()
        return _PROBE.pack(self.probe_id, self.sent_at, len(name)) + name


def parse_probe(body: bytes) -> Probe:
    if len(body) < _PROBE.size:
        raise FrameError("probe too short")
    probe_id, sent_at, length = _PROBE.unpack_from(body)
    name = body[_PROBE.size : _PROBE.size + length]
    if len(name) != length:
        raise FrameError("probe path name truncated")
    try:
        return Probe(name.decode(), probe_id, sent_at)
    except UnicodeDecodeError:
        raise FrameError("probe path name is not UTF-8") from None


MAX_NACK_SEQS = 128


def pack_nack(seqs: list[int]) -> bytes:
    return struct.pack(f"!{len(seqs)}H", *seqs)


def parse_nack(body: bytes) -> list[int]:
    if len(body) % 2 or len(body) > 2 * MAX_NACK_SEQS:
        raise FrameError("malformed NACK list")
    return list(struct.unpack(f"!{len(body) // 2}H", body))
