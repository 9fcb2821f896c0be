"""MPEG-TS core: packets, tables, PES headers, continuity, framing, RTP (on ffmpeg output)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.tv.ts import (
    PACKET_SIZE,
    ContinuityChecker,
    Pmt,
    PmtStream,
    SectionAssembler,
    TsFormatError,
    TsFramer,
    TsPacket,
    Unwrapper,
    build_packet,
    build_pat,
    build_pes_header,
    build_pmt,
    crc32_mpeg2,
    is_keyframe_payload,
    parse_pat,
    parse_pes_header,
    parse_pmt,
    strip_rtp,
    with_cc,
)


def tables(data: bytes) -> tuple[dict[int, int], Pmt]:
    pat_asm, pmt_asm = SectionAssembler(), SectionAssembler()
    programs: dict[int, int] = {}
    for off in range(0, len(data), PACKET_SIZE):
        p = TsPacket.parse(data, off)
        if p.pid == 0:
            for section in pat_asm.feed(p, data, off):
                programs = parse_pat(section)
        elif programs and p.pid in programs.values():
            for section in pmt_asm.feed(p, data, off):
                return programs, parse_pmt(section)
    raise AssertionError("no PMT")


def test_ffmpeg_output_has_h264_and_aac_tables(ts_media: Path) -> None:
    data = ts_media.read_bytes()
    programs, pmt = tables(data)
    assert list(programs) == [1]
    types = {s.stream_type for s in pmt.streams}
    assert types == {0x1B, 0x0F}
    assert pmt.video is not None and pmt.video.stream_type == 0x1B


def test_video_keyframes_flagged_once_a_second(ts_media: Path) -> None:
    data = ts_media.read_bytes()
    _, pmt = tables(data)
    assert pmt.video is not None
    pts_of_keyframes = []
    for off in range(0, len(data), PACKET_SIZE):
        p = TsPacket.parse(data, off)
        if p.pid == pmt.video.pid and p.pusi:
            payload = data[off + p.payload_offset : off + PACKET_SIZE]
            header = parse_pes_header(payload)
            if p.random_access:
                assert is_keyframe_payload(0x1B, payload[header.payload_offset :])
                pts_of_keyframes.append(header.pts)
    assert len(pts_of_keyframes) == 4
    steps = {b - a for a, b in zip(pts_of_keyframes, pts_of_keyframes[1:], strict=False)}
    assert steps == {90000}


def test_continuity_clean_on_ffmpeg_output_and_catches_a_lost_packet(ts_media: Path) -> None:
    data = ts_media.read_bytes()
    checker = ContinuityChecker()
    assert checker.feed(data) == 0
    damaged = data[: 50 * PACKET_SIZE] + data[51 * PACKET_SIZE :]
    assert ContinuityChecker().feed(damaged) >= 1


def test_continuity_allows_one_duplicate_packet() -> None:
    a = build_packet(0x100, b"\x01" * 184, cc=3)
    b = build_packet(0x100, b"\x02" * 184, cc=4)
    checker = ContinuityChecker()
    assert checker.feed(a + a + b) == 0
    assert checker.feed(with_cc(b, 9)) == 1


def test_framer_resyncs_after_garbage_and_split_chunks(ts_media: Path) -> None:
    data = ts_media.read_bytes()[: 40 * PACKET_SIZE]
    stream = b"\x00\x12garbage\x47junk" + data[:1000] + b"xx" + data[1000 - 1000 % PACKET_SIZE + PACKET_SIZE :]
    framer = TsFramer()
    out = b"".join(framer.feed(stream[i : i + 333]) for i in range(0, len(stream), 333))
    assert len(out) % PACKET_SIZE == 0
    assert all(out[i] == 0x47 for i in range(0, len(out), PACKET_SIZE))
    assert out.startswith(data[: PACKET_SIZE * 5])
    assert framer.dropped > 0


@given(st.binary(min_size=0, max_size=600), st.integers(min_value=1, max_value=400))
def test_framer_output_always_aligned(noise: bytes, step: int) -> None:
    packets = b"".join(build_packet(0x100, bytes([i]) * 184, cc=i) for i in range(6))
    stream = noise + packets
    framer = TsFramer()
    out = b"".join(framer.feed(stream[i : i + step]) for i in range(0, len(stream), step))
    assert len(out) % PACKET_SIZE == 0
    assert all(out[i] == 0x47 for i in range(0, len(out), PACKET_SIZE))


def test_tables_round_trip_and_crc() -> None:
    pat = build_pat({1: 0x1000})
    assert crc32_mpeg2(pat) == 0
    assert parse_pat(pat) == {1: 0x1000}
    pmt = Pmt(1, 0x100, (PmtStream(0x1B, 0x100), PmtStream(0x0F, 0x101)))
    assert parse_pmt(build_pmt(pmt)) == pmt
    broken = bytearray(build_pmt(pmt))
    broken[10] ^= 0xFF
    with pytest.raises(TsFormatError):
        parse_pmt(bytes(broken))


def test_section_spanning_packets() -> None:
    streams = tuple(PmtStream(0x0F, 0x101 + i) for i in range(60))  # 5 bytes each: > 184
    section = build_pmt(Pmt(1, 0x100, (PmtStream(0x1B, 0x100), *streams)))
    payload = b"\x00" + section
    first = build_packet(0x1000, payload[:184], pusi=True)
    rest = payload[184:] + b"\xff" * (184 - len(payload[184:]))
    second = build_packet(0x1000, rest, cc=1)
    asm = SectionAssembler()
    assert asm.feed(TsPacket.parse(first), first) == []
    (got,) = asm.feed(TsPacket.parse(second), second)
    assert parse_pmt(got).streams[1:] == streams


@given(st.integers(min_value=0, max_value=(1 << 33) - 1), st.integers(min_value=0, max_value=(1 << 33) - 1))
def test_pes_timestamps_round_trip(pts: int, dts: int) -> None:
    header = build_pes_header(0xE0, pts, dts) + b"\x00\x00\x01\x65"
    parsed = parse_pes_header(header)
    assert parsed.pts == pts
    assert parsed.dts == (dts if dts != pts else None)
    assert header[parsed.payload_offset :] == b"\x00\x00\x01\x65"


def test_keyframe_detection_from_nal_types() -> None:
    assert is_keyframe_payload(0x1B, b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x67\x00\x00\x01\x65")
    assert not is_keyframe_payload(0x1B, b"\x00\x00\x00\x01\x09\xf0\x00\x00\x01\x41")
    assert is_keyframe_payload(0x24, b"\x00\x00\x01" + bytes([19 << 1, 1]))
    assert not is_keyframe_payload(0x24, b"\x00\x00\x01" + bytes([1 << 1, 1]))


def test_pcr_and_flags() -> None:
    raw = bytearray(build_packet(0x100, b"\x00" * 170, random_access=True))
    # Put a PCR of base 12345 into the adaptation field by hand.
    raw[5] |= 0x10
    base = 12345
    raw[6:12] = bytes(
        [
            (base >> 25) & 0xFF,
            (base >> 17) & 0xFF,
            (base >> 9) & 0xFF,
            (base >> 1) & 0xFF,
            ((base & 1) << 7) | 0x7E,
            7,
        ]
    )
    p = TsPacket.parse(bytes(raw))
    assert p.random_access and p.pcr == base * 300 + 7 and p.pid == 0x100


def test_strip_rtp() -> None:
    ts = build_packet(0x100, b"\x00" * 184) * 7
    assert strip_rtp(ts) == ts
    rtp = bytes([0x80, 33]) + (1).to_bytes(2, "big") + b"\x00" * 8 + ts
    assert strip_rtp(rtp) == ts
    with_ext = bytes([0x90, 33]) + b"\x00" * 10 + b"\xbe\xde\x00\x01" + b"\x00" * 4 + ts
    assert strip_rtp(with_ext) == ts
    assert strip_rtp(b"\x12\x34") == b""


def test_unwrapper_crosses_33_bits() -> None:
    unwrap = Unwrapper()
    assert unwrap((1 << 33) - 3000) == (1 << 33) - 3000
    assert unwrap(600) == (1 << 33) + 600
    assert unwrap(4200) == (1 << 33) + 4200


def test_adts_frame_duration() -> None:
    from media.tv.ts import adts_duration

    header_48k = bytes([0xFF, 0xF1, 0x4C, 0x80, 0x2E, 0x7F, 0xFC])  # AAC-LC, 48 kHz, stereo
    assert adts_duration(header_48k) == 1920
    header_44k = bytes([0xFF, 0xF1, 0x50, 0x80, 0x2E, 0x7F, 0xFC])
    assert adts_duration(header_44k) == 1024 * 90000 // 44100
    assert adts_duration(b"\x00" * 7) is None
