"""RTP/RTCP/telephone-event values against packets captured from real peers (tests/media/fixtures)."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from media.errors import PacketError
from media.rtp import (
    SDES_CNAME,
    AppPacket,
    Bye,
    ReceiverReport,
    ReportBlock,
    RtpExtension,
    RtpPacket,
    SdesChunk,
    SdesItem,
    SenderReport,
    SourceDescription,
    TelephoneEvent,
    UnknownRtcp,
    dtmf_events,
    is_rtcp,
    parse_rtcp,
    serialize_rtcp,
)

FIXTURES = Path(__file__).parent / "fixtures"


def fixture(name: str) -> bytes:
    return (FIXTURES / name).read_bytes()


def test_rtp_pcmu_from_baresip() -> None:
    data = fixture("rtp_pcmu_baresip.bin")
    packet = RtpPacket.parse(data)
    assert (packet.payload_type, packet.sequence, packet.timestamp, packet.ssrc) == (
        0,
        0x38E3,
        0x5FD8,
        0x10DABCA5,
    )
    assert packet.marker and packet.csrc == () and packet.extension is None  # first of the talkspurt
    assert len(packet.payload) == 160
    assert bytes(packet) == data


def test_rtp_pcma_with_marker_from_sipp() -> None:
    data = fixture("rtp_pcma_marker_sipp.bin")
    packet = RtpPacket.parse(data)
    assert packet.marker and packet.payload_type == 8
    assert packet.sequence == 0xE6FD and packet.timestamp == 0xF0
    assert bytes(packet) == data


def test_rtp_header_extension() -> None:
    data = fixture("rtp_extension_constructed.bin")
    packet = RtpPacket.parse(data)
    assert packet.extension == RtpExtension(0xBEDE, bytes.fromhex("1000ff00"))
    assert packet.payload == b"\x01\x02\x03\x04"
    assert bytes(packet) == data


def test_rtp_csrc_and_padding_round_trip() -> None:
    packet = RtpPacket(96, 65535, 0xFFFFFFFF, 1, b"abc", marker=True, csrc=(7, 8), padding=5)
    data = bytes(packet)
    assert len(data) == 12 + 8 + 3 + 5 and data[-1] == 5
    assert RtpPacket.parse(data) == packet


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\x80\x00", "shorter"),
        (bytes.fromhex("400000010000000000000001"), "version 1"),
        (bytes.fromhex("820000010000000000000001") + b"\x00\x00\x00\x01", "CSRC"),
        (bytes.fromhex("900000010000000000000001") + b"\xbe\xde\x00\x02\x00\x00\x00\x00", "extension"),
        (bytes.fromhex("a00000010000000000000001") + b"\x00\x09", "padding"),
        (bytes.fromhex("a00000010000000000000001") + b"\x00\x00", "padding"),
    ],
)
def test_rtp_malformed(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        RtpPacket.parse(data)


def test_sender_report_with_block_and_sdes_from_baresip() -> None:
    data = fixture("rtcp_sr_sdes_baresip.bin")
    sr, sdes = parse_rtcp(data)
    assert isinstance(sr, SenderReport) and isinstance(sdes, SourceDescription)
    assert sr.ssrc == 0x90B0C9D7
    assert sr.ntp_timestamp == 0xEEB258517A1AD645
    assert (sr.rtp_timestamp, sr.packet_count, sr.octet_count) == (0x18D58, 250, 40000)
    (block,) = sr.reports
    assert block == ReportBlock(0x10DABCA5, 0, 0, 0x39DD, 8, 0x5851798F, 0x83)
    assert sdes.cname(0x90B0C9D7) == b"sip:a@127.0.0.1:5071"
    assert sdes.cname(1) is None
    assert serialize_rtcp((sr, sdes)) == data


def test_sender_report_from_ffmpeg() -> None:
    data = fixture("rtcp_sr_ffmpeg.bin")
    (sr,) = parse_rtcp(data)
    assert isinstance(sr, SenderReport) and sr.reports == () and sr.extension == b""
    assert (sr.ssrc, sr.packet_count, sr.octet_count) == (0x905107CD, 0x111, 0x9C00)
    assert bytes(sr) == data


def test_bye_with_reason_from_baresip() -> None:
    data = fixture("rtcp_bye_sdes_baresip.bin")
    bye, sdes = parse_rtcp(data)
    assert bye == Bye((0x90B0C9D7,), b"Adjo")
    assert isinstance(sdes, SourceDescription)
    assert serialize_rtcp((bye, sdes)) == data


def test_app_from_baresip() -> None:
    data = fixture("rtcp_app_baresip.bin")
    (app,) = parse_rtcp(data)
    assert app == AppPacket(0, 0x10DABCA5, b"PING", b"PONG")
    assert bytes(app) == data


def test_receiver_report_and_sdes() -> None:
    data = fixture("rtcp_rr_sdes_constructed.bin")
    rr, sdes = parse_rtcp(data)
    assert rr == ReceiverReport(0x11223344, (ReportBlock(0x55667788, 0x20, 5, 0x10064, 10, 0x12345678, 0x10000),))
    assert sdes == SourceDescription((SdesChunk(0x11223344, (SdesItem(SDES_CNAME, b"host"),)),))
    assert serialize_rtcp((rr, sdes)) == data


def test_negative_cumulative_loss_round_trips() -> None:
    block = ReportBlock(1, 0, -3, 2, 3, 4, 5)
    assert ReportBlock.parse(bytes(block)) == block


def test_bye_without_reason_and_several_sources() -> None:
    bye = Bye((1, 2, 3))
    assert parse_rtcp(bytes(bye)) == (bye,)


def test_unknown_rtcp_is_kept_whole() -> None:
    # A transport-wide feedback packet (PT 205) passes through untouched.
    data = bytes.fromhex("8fcd000400000001000000020001020304050607")
    (packet,) = parse_rtcp(data)
    assert packet == UnknownRtcp(205, 15, bytes.fromhex("00000001000000020001020304050607"))
    assert bytes(packet) == data


def test_padded_last_packet_is_accepted() -> None:
    data = bytes.fromhex("a0c900020000000100000004")
    (rr,) = parse_rtcp(data)
    assert rr == ReceiverReport(1)


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"\x80\xc9", "header"),
        (bytes.fromhex("80c9000500000001"), "runs past"),
        (bytes.fromhex("40c9000100000001"), "version"),
        (bytes.fromhex("81c9000100000001"), "blocks"),
        (bytes.fromhex("a0c9000100000001") + bytes.fromhex("80c9000100000001"), "last packet"),
        (bytes.fromhex("81ca0002000000010104"), "past"),
        (bytes.fromhex("81ca000200000001") + b"\x01\x09ab", "past"),
        (bytes.fromhex("81cb0000"), "sources"),
        (bytes.fromhex("81cb000200000001") + b"\x09abc", "reason"),
        (bytes.fromhex("80cc000100000001"), "APP"),
        (bytes.fromhex("80c8000100000001"), "sender info"),
    ],
)
def test_rtcp_malformed(data: bytes, message: str) -> None:
    with pytest.raises(PacketError, match=message):
        parse_rtcp(data)


def test_rtcp_mux_demultiplexing() -> None:
    assert is_rtcp(fixture("rtcp_sr_ffmpeg.bin"))
    assert not is_rtcp(fixture("rtp_pcmu_baresip.bin"))
    assert not is_rtcp(fixture("rtp_dtmf1_start_sipp.bin"))


def test_telephone_event_start_and_end_from_sipp() -> None:
    start = RtpPacket.parse(fixture("rtp_dtmf1_start_sipp.bin"))
    end = RtpPacket.parse(fixture("rtp_dtmf1_end_sipp.bin"))
    assert start.payload_type == 101 and start.marker and not end.marker
    assert start.timestamp == end.timestamp
    first, last = TelephoneEvent.parse(start.payload), TelephoneEvent.parse(end.payload)
    assert first == TelephoneEvent(1, False, 10, 0) and first.digit == "1"
    assert last == TelephoneEvent(1, True, 10, 0x8C0)
    assert bytes(last) == end.payload


def test_telephone_event_too_short() -> None:
    with pytest.raises(PacketError):
        TelephoneEvent.parse(b"\x01\x0a")


def test_dtmf_events_for_a_key_press() -> None:
    events = dtmf_events("#", duration=800, step=160)
    assert [e.duration for e in events] == [160, 320, 480, 640, 800, 800, 800]
    assert [e.end for e in events] == [False] * 4 + [True] * 3
    assert {e.event for e in events} == {11} and events[0].digit == "#"
    with pytest.raises(ValueError):
        dtmf_events("x")


def test_value_checks() -> None:
    with pytest.raises(ValueError):
        RtpPacket(128, 0, 0, 0)
    with pytest.raises(ValueError):
        RtpPacket(0, 1 << 16, 0, 0)
    with pytest.raises(ValueError):
        ReportBlock(1, 256, 0, 0, 0, 0, 0)
    with pytest.raises(ValueError):
        AppPacket(0, 1, b"NAMEX")
    with pytest.raises(ValueError):
        TelephoneEvent(1, False, 64, 0)


@given(st.binary(max_size=200))
def test_parsers_raise_only_packet_errors(data: bytes) -> None:
    for parse in (RtpPacket.parse, parse_rtcp, TelephoneEvent.parse):
        try:
            parse(data)
        except PacketError:
            pass


@given(
    st.integers(0, 127),
    st.integers(0, 0xFFFF),
    st.integers(0, 0xFFFFFFFF),
    st.lists(st.integers(0, 0xFFFFFFFF), max_size=15),
    st.binary(max_size=64),
    st.booleans(),
)
def test_rtp_round_trip(pt: int, seq: int, ts: int, csrc: list[int], payload: bytes, marker: bool) -> None:
    packet = RtpPacket(pt, seq, ts, 0xABCDEF01, payload, marker, tuple(csrc))
    assert RtpPacket.parse(bytes(packet)) == packet


@given(st.lists(st.binary(max_size=40), max_size=5), st.binary(max_size=30))
def test_sdes_and_bye_round_trip(values: list[bytes], reason: bytes) -> None:
    sdes = SourceDescription((SdesChunk(9, tuple(SdesItem(SDES_CNAME, v) for v in values)),))
    bye = Bye((9,), reason)
    assert parse_rtcp(bytes(sdes) + bytes(bye)) == (sdes, bye)
