from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from gateway.tunnel import control
from gateway.tunnel.aead import PacketKey
from gateway.tunnel.errors import AuthenticationFailed, ControlProtocolError, FrameError
from gateway.tunnel.frame import (
    HEADER_SIZE,
    OVERHEAD,
    Flags,
    FrameType,
    Header,
    Probe,
    TrafficClass,
    pack_nack,
    parse_header,
    parse_nack,
    parse_probe,
    peek_key_id,
)
from gateway.tunnel.replay import ReplayWindow

headers = st.builds(
    Header,
    st.sampled_from(FrameType),
    st.sampled_from(TrafficClass),
    st.sampled_from([Flags.NONE, Flags.RETRANSMIT, Flags.DUPLICATE, Flags.RETRANSMIT | Flags.DUPLICATE]),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**48 - 1),
    st.integers(0, 2**32 - 1),
    st.integers(0, 2**16 - 1),
)


@given(headers)
def test_header_round_trips(header: Header) -> None:
    packed = header.pack()
    assert len(packed) == HEADER_SIZE
    assert parse_header(packed + bytes(16)) == header
    assert peek_key_id(packed + bytes(16)) == header.key_id


def test_header_fixture_bytes() -> None:
    header = Header(FrameType.DATA, TrafficClass.TV, Flags.RETRANSMIT, 0xA1B2C3D4, 0x0102_0304_0506, 7, 0xBEEF)
    assert header.pack().hex() == "1061a1b2c3d40102030405060000000" + "7beef"


def test_bad_frames_raise() -> None:
    with pytest.raises(FrameError):
        parse_header(b"\x10" * (OVERHEAD - 1))
    with pytest.raises(FrameError):
        parse_header(b"\x20" + bytes(OVERHEAD))
    with pytest.raises(FrameError):
        parse_header(b"\x1f" + bytes(OVERHEAD))


def test_probe_and_nack_payloads() -> None:
    probe = Probe("satellite", 42, 12.5)
    assert parse_probe(probe.pack()) == probe
    with pytest.raises(FrameError):
        parse_probe(probe.pack()[:-1])
    assert parse_nack(pack_nack([1, 65535, 3])) == [1, 65535, 3]
    with pytest.raises(FrameError):
        parse_nack(b"\x00")


def test_aead_seals_and_detects_tampering() -> None:
    key = PacketKey(bytes(range(32)), bytes(12))
    header = Header(FrameType.DATA, TrafficClass.VOICE, Flags.NONE, 1, 5, 2, 3).pack()
    frame = key.seal(5, header, b"hello")
    assert len(frame) == OVERHEAD + 5
    assert key.open(5, frame[:HEADER_SIZE], frame[HEADER_SIZE:]) == b"hello"
    flipped_body = frame[:-1] + bytes([frame[-1] ^ 1])
    with pytest.raises(AuthenticationFailed):
        key.open(5, flipped_body[:HEADER_SIZE], flipped_body[HEADER_SIZE:])
    other_header = Header(FrameType.DATA, TrafficClass.TV, Flags.NONE, 1, 5, 2, 3).pack()
    with pytest.raises(AuthenticationFailed):  # the header is authenticated
        key.open(5, other_header, frame[HEADER_SIZE:])
    with pytest.raises(AuthenticationFailed):  # the nonce comes from the sequence
        key.open(6, frame[:HEADER_SIZE], frame[HEADER_SIZE:])


def test_replay_window_basics() -> None:
    window = ReplayWindow(64)
    for seq in (0, 1, 5, 3):
        assert window.check(seq)
        window.accept(seq)
    assert not window.check(3)
    assert window.check(2)
    window.accept(200)
    assert not window.check(200 - 64)  # fell out of the window
    assert window.check(200 - 63)


@given(st.lists(st.integers(0, 3000), max_size=300))
def test_replay_window_accepts_each_sequence_once(seqs: list[int]) -> None:
    window = ReplayWindow(256)
    seen: set[int] = set()
    for seq in seqs:
        ok = window.check(seq)
        if seq in seen:
            assert not ok
        elif seq > window.highest:
            assert ok
        if ok:
            window.accept(seq)
            seen.add(seq)


def test_control_messages_round_trip() -> None:
    messages: list[control.ControlMessage] = [
        control.Hello("site1", "e1"),
        control.RekeyOffer(3, 99, b"\x01" * 32),
        control.FlowOpen(4, "site1", "hq", "rtp", 1, {"call": "abc"}),
        control.Message("m1", "site1", "hq", "ledger", b"\x00\xffbinary"),
        control.Ping(1, 2.5),
    ]
    stream = b"".join(control.encode(m) for m in messages)
    decoder = control.ControlDecoder()
    out: list[control.ControlMessage] = []
    for i in range(0, len(stream), 7):  # arbitrary TCP segmentation
        out.extend(decoder.feed(stream[i : i + 7]))
    assert out == messages


def test_control_rejects_garbage() -> None:
    decoder = control.ControlDecoder()
    with pytest.raises(ControlProtocolError):
        list(decoder.feed(b"\xff\xff\xff\xff"))
    bad = control.encode(control.Ping(1, 2.0)).replace(b'"nonce":1', b'"nonce":"x"')
    with pytest.raises(ControlProtocolError):
        list(control.ControlDecoder().feed(bad))
