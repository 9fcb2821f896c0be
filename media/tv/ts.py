"""MPEG-TS (ISO/IEC 13818-1) without I/O: packets, PAT/PMT, PES headers, continuity counters.

Only what a segmenter and a source checker need: it never reassembles PES payloads.
Everything works on ``bytes`` and offsets so a caller can walk a chunk of packets
without copying each one.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field

PACKET_SIZE = 188
SYNC_BYTE = 0x47
PAT_PID = 0x0000
SDT_PID = 0x0011
NULL_PID = 0x1FFF
TS_CLOCK = 90_000
PTS_WRAP = 1 << 33

# Stream types (ISO 13818-1 table 2-34 plus the registered ones we meet in DVB/ATSC feeds).
VIDEO_STREAM_TYPES = frozenset({0x01, 0x02, 0x10, 0x1B, 0x24, 0x42, 0xEA})
AUDIO_STREAM_TYPES = frozenset({0x03, 0x04, 0x0F, 0x11, 0x81, 0x87})
H264_STREAM_TYPE = 0x1B
HEVC_STREAM_TYPE = 0x24


class TsFormatError(ValueError):
    """Bytes that are not what MPEG-TS says they must be."""


@dataclass(frozen=True)
class TsPacket:
    pid: int
    pusi: bool  # payload unit start indicator: a PES or PSI section starts here
    cc: int  # continuity counter
    has_payload: bool
    random_access: bool  # adaptation field random_access_indicator
    discontinuity: bool  # adaptation field discontinuity_indicator
    pcr: int | None  # in 27 MHz ticks
    payload_offset: int  # from the packet's first byte

    @classmethod
    def parse(cls, data: bytes, offset: int = 0) -> TsPacket:
        if len(data) - offset < PACKET_SIZE or data[offset] != SYNC_BYTE:
            raise TsFormatError("not a TS packet (no sync byte)")
        b1, b2, b3 = data[offset + 1], data[offset + 2], data[offset + 3]
        afc = (b3 >> 4) & 0x3
        random_access = discontinuity = False
        pcr: int | None = None
        payload_offset = 4
        if afc & 0x2:
            af_len = data[offset + 4]
            if af_len > 183:
                raise TsFormatError("adaptation field longer than the packet")
            if af_len:
                flags = data[offset + 5]
                discontinuity = bool(flags & 0x80)
                random_access = bool(flags & 0x40)
                if flags & 0x10 and af_len >= 7:
                    pcr = _parse_pcr(data, offset + 6)
            payload_offset = 5 + af_len
        return cls(
            pid=((b1 & 0x1F) << 8) | b2,
            pusi=bool(b1 & 0x40),
            cc=b3 & 0x0F,
            has_payload=bool(afc & 0x1) and payload_offset < PACKET_SIZE,
            random_access=random_access,
            discontinuity=discontinuity,
            pcr=pcr,
            payload_offset=payload_offset,
        )


def _parse_pcr(data: bytes, at: int) -> int:
    base = (data[at] << 25) | (data[at + 1] << 17) | (data[at + 2] << 9) | (data[at + 3] << 1) | (data[at + 4] >> 7)
    ext = ((data[at + 4] & 0x01) << 8) | data[at + 5]
    return base * 300 + ext


def packet_pid(data: bytes, offset: int = 0) -> int:
    return ((data[offset + 1] & 0x1F) << 8) | data[offset + 2]


def with_cc(packet: bytes, cc: int) -> bytes:
    """A copy of one packet with its continuity counter replaced."""
    return packet[:3] + bytes([(packet[3] & 0xF0) | (cc & 0x0F)]) + packet[4:PACKET_SIZE]


def build_packet(pid: int, payload: bytes, *, cc: int = 0, pusi: bool = False, random_access: bool = False) -> bytes:
    """One packet carrying ``payload`` (at most 184 bytes), stuffed with an adaptation field."""
    header = bytes([SYNC_BYTE, (0x40 if pusi else 0) | (pid >> 8), pid & 0xFF])
    room = PACKET_SIZE - 4
    if len(payload) > room or (random_access and len(payload) > room - 2):
        raise ValueError("payload does not fit in one packet")
    if len(payload) == room and not random_access:
        return header + bytes([0x10 | (cc & 0x0F)]) + payload
    af_len = room - len(payload) - 1
    af = bytes([af_len])
    if af_len:
        af += bytes([0x40 if random_access else 0x00]) + b"\xff" * (af_len - 1)
    return header + bytes([0x30 | (cc & 0x0F)]) + af + payload


# --- framing -----------------------------------------------------------------------------------


@dataclass
class TsFramer:
    """Cut an arbitrary byte stream into aligned packets, resynchronising after garbage.

    ``feed`` returns whole aligned packets as one ``bytes`` (a multiple of 188) and keeps the
    tail; ``dropped`` counts bytes discarded while hunting for sync.
    """

    dropped: int = 0
    _buf: bytearray = field(default_factory=bytearray)
    _locked: bool = False

    def feed(self, data: bytes) -> bytes:
        buf = self._buf
        buf += data
        out = bytearray()
        i = 0
        n = len(buf)
        while n - i >= PACKET_SIZE:
            if self._locked and buf[i] == SYNC_BYTE:
                # In sync: take the longest run of aligned sync bytes at once.
                j = i + PACKET_SIZE
                while n - j >= PACKET_SIZE and buf[j] == SYNC_BYTE:
                    j += PACKET_SIZE
                out += buf[i:j]
                i = j
                continue
            self._locked = False
            # Hunting: a sync byte counts only when another follows one packet later.
            if buf[i] == SYNC_BYTE:
                if n - i < PACKET_SIZE + 1:
                    break
                if buf[i + PACKET_SIZE] == SYNC_BYTE:
                    self._locked = True
                    continue
            nxt = buf.find(SYNC_BYTE, i + 1)
            skip_to = nxt if nxt >= 0 else n
            self.dropped += skip_to - i
            i = skip_to
        del buf[:i]
        return bytes(out)

    def reset(self) -> None:
        self._buf.clear()
        self._locked = False


def iter_offsets(chunk: bytes) -> Iterator[int]:
    """Offsets of the packets in an aligned chunk (as returned by TsFramer.feed)."""
    return iter(range(0, len(chunk) - PACKET_SIZE + 1, PACKET_SIZE))


# --- RTP -------------------------------------------------------------------------------------


def strip_rtp(datagram: bytes) -> bytes:
    """The MPEG-TS payload of a datagram that is raw TS or RTP carrying TS (RFC 2250).

    Raw TS starts with the sync byte; RTP starts with version 2 (0x80-0xBF), which never
    collides. Anything else yields ``b""``.
    """
    if not datagram:
        return b""
    first = datagram[0]
    if first == SYNC_BYTE:
        return datagram
    if first >> 6 != 2 or len(datagram) < 12:
        return b""
    offset = 12 + 4 * (first & 0x0F)
    if first & 0x10:  # header extension
        if len(datagram) < offset + 4:
            return b""
        offset += 4 + 4 * int.from_bytes(datagram[offset + 2 : offset + 4], "big")
    end = len(datagram)
    if first & 0x20:  # padding
        end -= datagram[-1]
    if offset >= end:
        return b""
    return datagram[offset:end]


# --- PSI -------------------------------------------------------------------------------------


def crc32_mpeg2(data: bytes) -> int:
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else (crc << 1)
            crc &= 0xFFFFFFFF
    return crc


@dataclass(frozen=True)
class PmtStream:
    stream_type: int
    pid: int

    @property
    def is_video(self) -> bool:
        return self.stream_type in VIDEO_STREAM_TYPES

    @property
    def is_audio(self) -> bool:
        return self.stream_type in AUDIO_STREAM_TYPES


@dataclass(frozen=True)
class Pmt:
    program_number: int
    pcr_pid: int
    streams: tuple[PmtStream, ...]

    @property
    def video(self) -> PmtStream | None:
        return next((s for s in self.streams if s.is_video), None)


def _section_body(section: bytes, table_id: int) -> bytes:
    if len(section) < 12 or section[0] != table_id:
        raise TsFormatError(f"expected table id {table_id:#x}")
    length = ((section[1] & 0x0F) << 8) | section[2]
    if len(section) < 3 + length or length < 9:
        raise TsFormatError("section shorter than its length")
    if crc32_mpeg2(section[: 3 + length]) != 0:
        raise TsFormatError("section CRC mismatch")
    return section[8 : 3 + length - 4]


def parse_pat(section: bytes) -> dict[int, int]:
    """program_number -> PMT PID (program 0, the network PID, is left out)."""
    body = _section_body(section, 0x00)
    programs: dict[int, int] = {}
    for i in range(0, len(body) - 3, 4):
        number = (body[i] << 8) | body[i + 1]
        pid = ((body[i + 2] & 0x1F) << 8) | body[i + 3]
        if number:
            programs[number] = pid
    return programs


def parse_pmt(section: bytes) -> Pmt:
    body = _section_body(section, 0x02)
    program_number = (section[3] << 8) | section[4]
    pcr_pid = ((body[0] & 0x1F) << 8) | body[1]
    info_len = ((body[2] & 0x0F) << 8) | body[3]
    i = 4 + info_len
    streams = []
    while i + 5 <= len(body):
        stream_type = body[i]
        pid = ((body[i + 1] & 0x1F) << 8) | body[i + 2]
        es_len = ((body[i + 3] & 0x0F) << 8) | body[i + 4]
        streams.append(PmtStream(stream_type, pid))
        i += 5 + es_len
    return Pmt(program_number, pcr_pid, tuple(streams))


def build_section(table_id: int, extension: int, body: bytes, version: int = 0) -> bytes:
    length = 5 + len(body) + 4
    head = bytes(
        [
            table_id,
            0xB0 | (length >> 8),
            length & 0xFF,
            extension >> 8,
            extension & 0xFF,
            0xC1 | ((version & 0x1F) << 1),
            0x00,
            0x00,
        ]
    )
    crc = crc32_mpeg2(head + body)
    return head + body + crc.to_bytes(4, "big")


def build_pat(programs: dict[int, int], ts_id: int = 1) -> bytes:
    body = b"".join(n.to_bytes(2, "big") + (0xE000 | pid).to_bytes(2, "big") for n, pid in programs.items())
    return build_section(0x00, ts_id, body)


def build_pmt(pmt: Pmt) -> bytes:
    body = (0xE000 | pmt.pcr_pid).to_bytes(2, "big") + b"\xf0\x00"
    for s in pmt.streams:
        body += bytes([s.stream_type]) + (0xE000 | s.pid).to_bytes(2, "big") + b"\xf0\x00"
    return build_section(0x02, pmt.program_number, body)


@dataclass
class SectionAssembler:
    """Collect one PID's PSI sections across packets (pointer_field and continuation)."""

    _buf: bytearray = field(default_factory=bytearray)
    _collecting: bool = False

    def feed(self, packet: TsPacket, data: bytes, offset: int = 0) -> list[bytes]:
        if not packet.has_payload:
            return []
        payload = data[offset + packet.payload_offset : offset + PACKET_SIZE]
        sections: list[bytes] = []
        if packet.pusi:
            pointer = payload[0]
            if self._collecting:
                self._buf += payload[1 : 1 + pointer]
                sections += self._drain()
            self._buf = bytearray(payload[1 + pointer :])
            self._collecting = True
        elif self._collecting:
            self._buf += payload
        else:
            return []
        sections += self._drain()
        return sections

    def _drain(self) -> list[bytes]:
        out: list[bytes] = []
        while len(self._buf) >= 3 and self._buf[0] != 0xFF:
            length = ((self._buf[1] & 0x0F) << 8) | self._buf[2]
            if len(self._buf) < 3 + length:
                break
            out.append(bytes(self._buf[: 3 + length]))
            del self._buf[: 3 + length]
        if self._buf[:1] == b"\xff":  # stuffing: the rest of the payload is empty
            self._buf.clear()
            self._collecting = False
        return out


# --- PES -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PesHeader:
    stream_id: int
    pts: int | None
    dts: int | None
    payload_offset: int  # of the elementary stream data, from the PES start

    @property
    def decode_ts(self) -> int | None:
        return self.dts if self.dts is not None else self.pts


def _parse_ts33(data: bytes, at: int) -> int:
    return (
        ((data[at] >> 1) & 0x07) << 30
        | data[at + 1] << 22
        | (data[at + 2] >> 1) << 15
        | data[at + 3] << 7
        | data[at + 4] >> 1
    )


def parse_pes_header(payload: bytes) -> PesHeader:
    """The header of a PES packet starting at ``payload[0]`` (the first packet's payload)."""
    if len(payload) < 9 or payload[0:3] != b"\x00\x00\x01":
        raise TsFormatError("no PES start code")
    stream_id = payload[3]
    # Streams without the optional header (padding, private_stream_2, ECM, ...).
    if stream_id in (0xBC, 0xBE, 0xBF, 0xF0, 0xF1, 0xF2, 0xF8, 0xFF):
        return PesHeader(stream_id, None, None, 6)
    flags = payload[7]
    header_len = payload[8]
    pts = dts = None
    if flags & 0x80 and len(payload) >= 14:
        pts = _parse_ts33(payload, 9)
        if flags & 0x40 and len(payload) >= 19:
            dts = _parse_ts33(payload, 14)
    return PesHeader(stream_id, pts, dts, 9 + header_len)


def encode_ts33(value: int, marker: int) -> bytes:
    value %= PTS_WRAP
    return bytes(
        [
            (marker << 4) | ((value >> 29) & 0x0E) | 1,
            (value >> 22) & 0xFF,
            ((value >> 14) & 0xFE) | 1,
            (value >> 7) & 0xFF,
            ((value << 1) & 0xFE) | 1,
        ]
    )


def build_pes_header(stream_id: int, pts: int | None, dts: int | None = None) -> bytes:
    fields = b""
    flags = 0
    if pts is not None:
        if dts is not None and dts != pts:
            flags = 0xC0
            fields = encode_ts33(pts, 0x3) + encode_ts33(dts, 0x1)
        else:
            flags = 0x80
            fields = encode_ts33(pts, 0x2)
    return b"\x00\x00\x01" + bytes([stream_id, 0, 0, 0x80, flags, len(fields)]) + fields


def is_keyframe_payload(stream_type: int, es: bytes) -> bool:
    """Whether elementary stream bytes (the start of a PES payload) begin a random access point.

    For feeds whose muxer does not set random_access_indicator. H.264: an IDR slice or a
    sequence parameter set (encoders send one before each IDR/recovery point, and a big SEI
    can push the IDR slice out of the first packet); H.265: an IRAP slice or VPS/SPS;
    MPEG-2 video: a sequence header.
    """
    if stream_type in (0x01, 0x02):
        return es.find(b"\x00\x00\x01\xb3") >= 0
    start = 0
    while True:
        i = es.find(b"\x00\x00\x01", start)
        if i < 0 or i + 3 >= len(es):
            return False
        nal = es[i + 3]
        if stream_type == HEVC_STREAM_TYPE:
            if 16 <= (nal >> 1) & 0x3F <= 23 or (nal >> 1) & 0x3F in (32, 33):
                return True
        elif nal & 0x1F in (5, 7):
            return True
        start = i + 3


_ADTS_RATES = (96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350)


def adts_duration(frame: bytes) -> int | None:
    """Duration in 90 kHz ticks of an AAC frame in ADTS framing (1024 samples), from its header.

    A demuxer that has not finished probing hands out AAC frames without timestamps or
    durations; the header alone says how long each one lasts.
    """
    if len(frame) < 7 or frame[0] != 0xFF or frame[1] & 0xF6 != 0xF0:
        return None
    index = (frame[2] >> 2) & 0x0F
    if index >= len(_ADTS_RATES):
        return None
    return 1024 * TS_CLOCK // _ADTS_RATES[index]


# --- continuity ------------------------------------------------------------------------------


@dataclass
class ContinuityChecker:
    """Counts continuity-counter errors per PID, allowing one duplicate packet (13818-1 2.4.3.3)."""

    errors: int = 0
    errors_by_pid: dict[int, int] = field(default_factory=dict)
    _last: dict[int, tuple[int, bytes]] = field(default_factory=dict)

    def feed(self, chunk: bytes) -> int:
        """Check an aligned chunk; returns the errors found in it."""
        found = 0
        for off in iter_offsets(chunk):
            pid = ((chunk[off + 1] & 0x1F) << 8) | chunk[off + 2]
            if pid == NULL_PID:
                continue
            b3 = chunk[off + 3]
            cc = b3 & 0x0F
            has_payload = bool(b3 & 0x10)
            discontinuity = bool(b3 & 0x20) and chunk[off + 4] > 0 and bool(chunk[off + 5] & 0x80)
            previous = self._last.get(pid)
            packet = chunk[off : off + PACKET_SIZE]
            if previous is not None and not discontinuity:
                last_cc, last_packet = previous
                expected = (last_cc + 1) & 0x0F if has_payload else last_cc
                duplicate = has_payload and cc == last_cc and packet == last_packet
                if cc != expected and not duplicate:
                    found += 1
                    self.errors_by_pid[pid] = self.errors_by_pid.get(pid, 0) + 1
            self._last[pid] = (cc, packet)
        self.errors += found
        return found


@dataclass
class Unwrapper:
    """Extend 33-bit timestamps into a monotonic-ish integer line across wraps."""

    _base: int = 0
    _last: int | None = None

    def __call__(self, value: int) -> int:
        if self._last is not None:
            delta = value - self._last
            if delta < -PTS_WRAP // 2:
                self._base += PTS_WRAP
            elif delta > PTS_WRAP // 2:
                self._base -= PTS_WRAP
        self._last = value
        return self._base + value
