"""Three tunnel services (site, hub, HQ) in one process over 127.0.0.1, with a UDP relay as a second path."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

import pytest

from gateway.tunnel.errors import FlowRefused
from gateway.tunnel.flows import Flow, UdpBridge
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.service import TunnelService

from .helpers import eventually, free_port, tunnel_config
from .pkihelp import TestCa
from .relay import UdpRelay


@dataclass
class Topology:
    site: TunnelService
    hub: TunnelService
    hq: TunnelService
    sat: UdpRelay
    ca: TestCa
    hub_port: int


@pytest.fixture
async def topo() -> AsyncIterator[Topology]:
    ca = TestCa()
    hub_port, hq_port = free_port(), free_port()
    sat = UdpRelay(("127.0.0.1", 0), ("127.0.0.1", hub_port))
    await sat.start()
    paths_from_site = [
        {"name": "leased", "address": "127.0.0.1", "port": hub_port, "priority": 10},
        {"name": "satellite", "address": "127.0.0.1", "port": sat.listen[1], "priority": 20},
    ]
    site = TunnelService(
        tunnel_config(
            "site1",
            peers=[{"name": "hub", "paths": paths_from_site}],
            routes=[{"destination": "*", "via": "hub"}],
        ),
        ca.identity("site1"),
    )
    hub = TunnelService(
        tunnel_config(
            "hub",
            listen=[f"127.0.0.1:{hub_port}"],
            peers=[
                {
                    "name": "site1",
                    "dial": False,
                    "paths": [{"name": "leased"}, {"name": "satellite", "priority": 20}],
                },
                {"name": "hq", "dial": False, "paths": [{"name": "ground"}]},
            ],
        ),
        ca.identity("hub"),
    )
    hq = TunnelService(
        tunnel_config(
            "hq",
            listen=[f"127.0.0.1:{hq_port}"],
            peers=[{"name": "hub", "paths": [{"name": "ground", "address": "127.0.0.1", "port": hub_port}]}],
            routes=[{"destination": "*", "via": "hub"}],
        ),
        ca.identity("hq"),
    )
    services = [hub, site, hq]
    try:
        for s in services:
            await s.start()
        async with asyncio.timeout(20):
            await site.wait_connected("hub")
            await hq.wait_connected("hub")
        yield Topology(site, hub, hq, sat, ca, hub_port)
    finally:
        for s in services:
            await s.stop()
        sat.close()


def echo(flow: Flow) -> None:
    flow.set_receiver(lambda data: flow.send(b"echo:" + data))


async def collect(flow: Flow, count: int) -> list[bytes]:
    out = []
    async with asyncio.timeout(20):
        while len(out) < count:
            out.append(await flow.recv())
    return out


async def test_flow_through_the_hub_both_ways(topo: Topology) -> None:
    topo.hq.serve("echo", echo)
    flow = await topo.site.open_flow("hq", "echo", TrafficClass.VOICE, {"call": "c1"})
    assert flow.peer == "hq" and flow.max_datagram == 1400 - 34
    for i in range(20):
        flow.send(b"%d" % i)
        await asyncio.sleep(0.005)
    got = await collect(flow, 20)
    assert sorted(got) == sorted(b"echo:%d" % i for i in range(20))
    assert topo.hub.status()["flows"] == {"local": 0, "transit": 1}
    assert topo.hub.counters.forwarded >= 40
    flow.close()
    await eventually(lambda: not topo.hub.switch.transit_count)


async def test_refusals(topo: Topology) -> None:
    with pytest.raises(FlowRefused, match="no service 'nothing'"):
        await topo.site.open_flow("hq", "nothing")
    with pytest.raises(FlowRefused, match="hub has no route to lagos"):
        await topo.site.open_flow("lagos", "echo")


async def test_tv_flow_bridged_to_udp_sockets(topo: Topology) -> None:
    """A TV source at HQ sends UDP to a local bridge; a player at the site receives it in order."""
    received: list[bytes] = []
    got_all = asyncio.Event()

    class Player(asyncio.DatagramProtocol):
        def datagram_received(self, data: bytes, addr: object) -> None:
            received.append(data)
            if len(received) == 200:
                got_all.set()

    loop = asyncio.get_running_loop()
    transport, _ = await loop.create_datagram_endpoint(Player, local_addr=("127.0.0.1", 0))
    player_addr = transport.get_extra_info("sockname")[:2]
    topo.site.serve("tv", lambda f: UdpBridge.open(f, remote=player_addr))
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        flow = await topo.hq.open_flow("site1", "tv", "tv", {"channel": "cctv4"})
        source = UdpBridge.open(flow)
        for i in range(200):
            sender.sendto(i.to_bytes(4, "big") + bytes(1312), source.local_address)
            if i % 20 == 0:
                await asyncio.sleep(0.01)
        async with asyncio.timeout(20):
            await got_all.wait()
        assert [int.from_bytes(d[:4], "big") for d in received] == list(range(200))
        source.close()
    finally:
        sender.close()
        transport.close()


async def test_messages_store_and_forward_end_to_end(topo: Topology) -> None:
    got: list[tuple[str, bytes]] = []

    async def ledger(src: str, body: bytes) -> None:
        got.append((src, body))

    topo.hq.on_message("ledger", ledger)
    await topo.site.send_message("hq", "ledger", b"row-1", message_id="s1:leg1:run1")
    await topo.site.send_message("hq", "ledger", b"row-1", message_id="s1:leg1:run1")  # idempotent
    await eventually(lambda: not topo.site.pending_messages)
    assert got == [("site1", b"row-1")]
    # HQ's handler not there yet: the message waits and is delivered once it is.
    got2: list[bytes] = []

    async def billing(src: str, body: bytes) -> None:
        got2.append(body)

    await topo.hq.send_message("site1", "billing", b"later")
    await asyncio.sleep(0.3)
    assert topo.hq.pending_messages == 1
    topo.site.on_message("billing", billing)
    topo.hq._outbox.route_up(None, asyncio.get_running_loop().time())
    await eventually(lambda: topo.hq._pump_outbox() or not topo.hq.pending_messages)
    assert got2 == [b"later"]


async def test_replayed_and_tampered_datagrams_are_counted(topo: Topology) -> None:
    topo.hq.serve("echo", echo)
    flow = await topo.site.open_flow("hq", "echo", TrafficClass.VIDEO)
    topo.sat.tapping = True
    # Put the site's traffic on the satellite relay to capture frames there.
    topo.site.links["hub"].core.monitor.active = "satellite"
    for i in range(5):
        flow.send(b"x%d" % i)
    await collect(flow, 5)
    assert topo.sat.tap
    link = topo.hub.links["site1"]
    before = link.core.counters.replayed, link.core.counters.tampered
    for frame in topo.sat.tap[-3:]:
        topo.sat.inject(frame)
        topo.sat.inject(frame[:-1] + bytes([frame[-1] ^ 1]))
    await eventually(lambda: link.core.counters.replayed - before[0] >= 3)
    # A flipped tag on an already-seen sequence is a replay (checked before decrypting);
    # a forgery with a fresh sequence fails authentication.
    fresh = bytearray(topo.sat.tap[-1])
    fresh[11] ^= 0x80
    topo.sat.inject(bytes(fresh))
    await eventually(lambda: link.core.counters.tampered > before[1])
    assert link.core.counters.replayed - before[0] == 6
    logging.getLogger().info("status %s", topo.hub.status()["links"])


async def test_foreign_certificate_is_refused(topo: Topology, caplog: pytest.LogCaptureFixture) -> None:
    intruder = TunnelService(
        tunnel_config(
            "site1",
            peers=[{"name": "hub", "paths": [{"name": "leased", "address": "127.0.0.1", "port": topo.hub_port}]}],
        ),
        # It knows our CA's (public) certificate, so it accepts the hub; its own is from elsewhere.
        replace(TestCa("Foreign CA").identity("site1"), ca=topo.ca.cert),
    )
    caplog.set_level(logging.INFO, "seabridge.tunnel")
    await intruder.start()
    try:
        await eventually(lambda: topo.hub.counters.peers_refused)
    finally:
        await intruder.stop()
    refusals = [r.message for r in caplog.records if "tunnel hub refused a peer" in r.message]
    assert refusals and "not signed by our CA" in refusals[0], refusals
    assert topo.hub.links["site1"].connected  # the genuine site is untouched
