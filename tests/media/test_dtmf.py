from __future__ import annotations

from gateway.sip.dtmf_info import info_digit
from media.dtmf import DtmfSender
from media.rtp import RtpPacket, TelephoneEvent


def test_a_key_press_is_one_event_paced_at_20_ms_then_three_ends() -> None:
    sender = DtmfSender(payload_type=101, ssrc=1, sequence=65534, timestamp=1000)
    packets = sender.packets("5", 100, now=10.0)
    parsed = [RtpPacket.parse(d) for _, d in packets]
    events = [TelephoneEvent.parse(p.payload) for p in parsed]
    assert [p.sequence for p in parsed] == [65534, 65535, 0, 1, 2, 3, 4]  # wraps
    assert {p.timestamp for p in parsed} == {1000} and parsed[0].marker and not parsed[1].marker
    assert [e.end for e in events] == [False] * 4 + [True] * 3 and events[-1].duration == 800
    assert [round(at - 10.0, 2) for at, _ in packets] == [0.0, 0.02, 0.04, 0.06, 0.1, 0.1, 0.1]
    after = RtpPacket.parse(sender.packets("6", 100, now=11.0)[0][1])
    assert after.timestamp > 1000 and after.sequence == 5  # one stream across digits


def test_presses_faster_than_they_play_are_queued_not_overlapped() -> None:
    sender = DtmfSender(payload_type=101, ssrc=1, sequence=0, timestamp=0)
    first = sender.packets("1", 100, now=5.0)
    second = sender.packets("2", 100, now=5.01)  # an INFO right behind the first
    assert second[0][0] >= first[-1][0] + 0.05  # starts after the first ended, with a gap
    sequences = [RtpPacket.parse(d).sequence for _, d in first + second]
    assert sequences == list(range(14))  # sent in time order, numbered in time order


def test_info_bodies() -> None:
    assert info_digit("application/dtmf-relay", b"Signal=#\r\nDuration=120\r\n") == ("#", 120)
    assert info_digit("application/dtmf", b"3") == ("3", 160)
    assert info_digit("application/dtmf-relay", b"Signal=x\r\n") is None
    assert info_digit("text/plain", b"Signal=1") is None
