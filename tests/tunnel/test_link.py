"""Two link cores over simulated leased-line and satellite paths, on a fake clock."""

from __future__ import annotations

from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.link import LinkSettings
from gateway.tunnel.pathmon import ActivePathChanged

from .fakenet import SimPath, make_net, rekey

PRIORITY = {"leased": 10, "satellite": 20}


def paths(sat_loss: float = 0.0) -> list[SimPath]:
    return [SimPath("leased", 0.075), SimPath("satellite", 0.3, loss=sat_loss)]


def numbered(i: int, size: int = 160) -> bytes:
    return i.to_bytes(4, "big") + bytes(size - 4)


def test_voice_both_ways_survives_a_cut_and_returns() -> None:
    net = make_net(paths(), PRIORITY)
    net.a.open_flow(2, TrafficClass.VOICE)
    net.b.open_flow(2, TrafficClass.VOICE)
    net.run_until(3.0)
    sent = {"a": 0, "b": 0}

    def tick(now: float) -> None:
        for side in ("a", "b"):
            if now < 23.0:
                net.core(side).send(2, numbered(sent[side]), now)
                sent[side] += 1
        if abs(now - 8.0) < 1e-9:
            net.paths["leased"].cut = True
        if abs(now - 14.0) < 1e-9:
            net.paths["leased"].cut = False

    net.run_until(24.0, tick=0.02, on_tick=tick)
    for side in ("a", "b"):
        got = [int.from_bytes(r.payload[:4], "big") for r in net.received[side]]
        assert len(got) == len(set(got)), "no duplicates"
        missing = sorted(set(range(sent["b" if side == "a" else "a"])) - set(got))
        # Only frames sent into the dead line before failover are lost: under one second of voice.
        cut_index = round((8.0 - 3.0) / 0.02)
        assert missing and cut_index <= missing[0] and missing[-1] < cut_index + 50, missing
        changes = [e for e in net.events[side] if isinstance(e, ActivePathChanged)]
        assert [c.new for c in changes[-2:]] == ["satellite", "leased"]
    print(f"voice frames lost at failover: {len(missing)} of {sent['a']} (20 ms each)")


def test_duplicated_voice_loses_nothing_at_the_cut() -> None:
    net = make_net(paths(), PRIORITY, LinkSettings(duplicate_voice=True))
    net.a.open_flow(4, TrafficClass.VOICE)
    net.b.open_flow(4, TrafficClass.VOICE)
    net.run_until(3.0)
    sent = [0]

    def tick(now: float) -> None:
        if now < 9.5:
            net.a.send(4, numbered(sent[0]), now)
            sent[0] += 1
        if abs(now - 6.0) < 1e-9:
            net.paths["leased"].cut = True

    net.run_until(10.0, tick=0.02, on_tick=tick)
    got = [int.from_bytes(r.payload[:4], "big") for r in net.received["b"]]
    assert sorted(got) == list(range(sent[0]))
    assert net.b.flow_totals().duplicates > 100


def test_tv_over_lossy_satellite_arrives_complete_and_in_order() -> None:
    net = make_net([SimPath("satellite", 0.3, loss=0.05)], {"satellite": 20}, seed=7)
    net.a.open_flow(6, TrafficClass.TV)
    net.b.open_flow(6, TrafficClass.TV)
    net.run_until(3.0)
    sent = [0]

    def tick(now: float) -> None:
        if now < 13.0:
            for _ in range(2):
                net.a.send(6, numbered(sent[0], 1316), now)
                sent[0] += 1

    net.run_until(20.0, tick=0.01, on_tick=tick)
    got = [int.from_bytes(r.payload[:4], "big") for r in net.received["b"]]
    assert got == list(range(sent[0]))
    totals = net.b.flow_totals()
    assert totals.arq_recovered > 20 and totals.arq_lost == 0
    assert net.a.counters.retransmitted >= totals.arq_recovered
    print(
        f"TV: {sent[0]} frames, {totals.arq_recovered} recovered by NACK,",
        f"{net.a.counters.retransmitted} resent",
    )


def test_replayed_and_tampered_frames_are_dropped_and_counted() -> None:
    net = make_net(paths(), PRIORITY)
    net.a.open_flow(2, TrafficClass.VOICE)
    net.b.open_flow(2, TrafficClass.VOICE)
    net.run_until(1.0)
    for sim in net.paths.values():
        sim.cut = True  # capture the frame instead of delivering it
    net.a.send(2, b"genuine", 1.0)
    net.run_until(1.01)
    frame = [d for side, _, d in net.wire_log if side == "a" and d[0] & 0x0F == 0][-1]
    tampered = frame[:-3] + bytes([frame[-3] ^ 0x40]) + frame[-2:]
    net.b.receive(tampered, 1.02, "leased")
    forged = bytearray(frame)
    forged[2 + 4 + 5] ^= 0x01  # the sequence number: the header is authenticated too
    net.b.receive(bytes(forged), 1.02, "leased")
    assert net.b.counters.tampered == 2
    net.b.receive(frame, 1.03, "leased")  # the failed attempts did not move the replay window
    net.b.receive(frame, 1.04, "leased")
    assert net.b.counters.replayed == 1
    net.b.receive(b"\x10garbage", 1.05, "leased")
    assert net.b.counters.malformed == 1
    net.run_until(1.1)
    assert [r.payload for r in net.received["b"]] == [b"genuine"]


def test_rekey_mid_stream_loses_nothing() -> None:
    net = make_net(paths(), PRIORITY)
    net.a.open_flow(2, TrafficClass.VIDEO)
    net.b.open_flow(2, TrafficClass.VIDEO)
    net.run_until(2.0)
    sent = [0]
    first_key = net.a.keys.send_key

    def tick(now: float) -> None:
        net.a.send(2, numbered(sent[0]), now)
        sent[0] += 1
        if abs(now - 4.0) < 1e-9:
            rekey(net.a.keys, net.b.keys, b"new tls session", now)

    net.run_until(8.0, tick=0.01, on_tick=tick)
    assert net.a.keys.send_key is not first_key
    got = [int.from_bytes(r.payload[:4], "big") for r in net.received["b"]]
    assert got == list(range(sent[0] - 8))
    assert net.b.counters.unknown_key == 0


def test_oversized_and_unknown_flow_are_refused() -> None:
    net = make_net(paths(), PRIORITY)
    net.a.open_flow(2, TrafficClass.VOICE)
    assert not net.a.send(2, bytes(net.a.max_payload + 1), 0.0)
    assert net.a.counters.oversized == 1
    assert not net.a.send(99, b"x", 0.0)
    net.a.send(2, b"x", 0.1)  # b has no flow 2
    net.run_until(1.0)
    assert net.b.counters.unknown_flow == 1


def test_control_flows_fragment_large_messages_and_survive_loss() -> None:
    net = make_net([SimPath("satellite", 0.3, loss=0.1)], {"satellite": 20}, seed=3)
    net.a.open_flow(8, TrafficClass.CONTROL)
    net.b.open_flow(8, TrafficClass.CONTROL)
    net.run_until(3.0)
    big = bytes(range(256)) * 40  # a 10 KB SIP INVITE with a WebRTC SDP, say
    limit = net.a.max_datagram(TrafficClass.CONTROL)
    assert limit > len(big) and net.a.max_datagram(TrafficClass.VOICE) == net.a.max_payload
    messages = [b"INVITE small", big, b"", b"BYE"]
    for i, message in enumerate(messages):
        assert net.a.send(8, message, 3.0 + i * 0.01)
    assert not net.a.send(8, bytes(limit + 1), 3.1)
    net.run_until(15.0)
    assert [r.payload for r in net.received["b"]] == messages
