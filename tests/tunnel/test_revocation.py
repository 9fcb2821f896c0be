"""Peers applied live (``TunnelService.apply_peers``): a hub and two sites in one process over 127.0.0.1.

Removing a site from the hub's peers list revokes it at once (flows closed with the reason, the
control channel closed, its redials refused by the trust check) while the other site's flow
goes on carrying datagrams; adding it back lets it reconnect.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.config import load_config, parse_config
from gateway.tunnel.config import TunnelConfig
from gateway.tunnel.flows import Flow
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.metrics import register_metrics
from gateway.tunnel.reload import ConfigReloader, restart_only
from gateway.tunnel.service import TunnelService

from .helpers import eventually, free_port, tunnel_config
from .pkihelp import TestCa


def hub_config(port: int, sites: list[str]) -> TunnelConfig:
    peers = [{"name": s, "dial": False, "paths": [{"name": "leased"}]} for s in sites]
    return tunnel_config("hub", listen=[f"127.0.0.1:{port}"], peers=peers)


def site_config(name: str, hub_port: int) -> TunnelConfig:
    return tunnel_config(
        name,
        peers=[{"name": "hub", "paths": [{"name": "leased", "address": "127.0.0.1", "port": hub_port}]}],
        routes=[{"destination": "*", "via": "hub"}],
    )


@dataclass
class Star:
    hub: TunnelService
    site1: TunnelService
    site2: TunnelService
    port: int
    # Flows the hub's and site2's "echo" services took, by the node that opened them.
    at_hub: dict[str, Flow] = field(default_factory=dict)
    at_site2: dict[str, Flow] = field(default_factory=dict)


def echo_into(store: dict[str, Flow]) -> Any:
    def take(flow: Flow) -> None:
        store[flow.peer] = flow
        flow.set_receiver(lambda data: flow.send(b"echo:" + data))

    return take


@pytest.fixture
async def star() -> AsyncIterator[Star]:
    ca = TestCa()
    port = free_port()
    hub = TunnelService(hub_config(port, ["site1", "site2"]), ca.identity("hub"))
    site1 = TunnelService(site_config("site1", port), ca.identity("site1"))
    site2 = TunnelService(site_config("site2", port), ca.identity("site2"))
    topo = Star(hub, site1, site2, port)
    hub.serve("echo", echo_into(topo.at_hub))
    site2.serve("echo", echo_into(topo.at_site2))
    try:
        for s in (hub, site1, site2):
            await s.start()
        async with asyncio.timeout(20):
            await site1.wait_connected("hub")
            await site2.wait_connected("hub")
            await hub.wait_connected("site1")
            await hub.wait_connected("site2")
        await paths_up(hub, "site1")
        await paths_up(hub, "site2")
        yield topo
    finally:
        for s in (site1, site2, hub):
            await s.stop()


async def paths_up(service: TunnelService, peer: str) -> None:
    """Until ``service`` has heard a probe reply from ``peer``: the accepting side learns a site's
    path address from its first probe, and cannot send before that."""
    await eventually(lambda: peer in service.links and any(s.up for s in service.links[peer].core.path_stats()))


class Pinger:
    """Sends a datagram on a flow and waits for its echo, again and again, until stopped."""

    def __init__(self, flow: Flow) -> None:
        self.flow = flow
        self.echoed = 0
        self.task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        while True:
            payload = b"ping %d" % self.echoed
            self.flow.send(payload)
            async with asyncio.timeout(5):
                assert await self.flow.recv() == b"echo:" + payload
            self.echoed += 1
            await asyncio.sleep(0.01)  # pacing, not waiting for anything

    async def at_least(self, count: int) -> None:
        """Until ``count`` more echoes have come back (fails if the pinger failed)."""
        target = self.echoed + count
        await eventually(lambda: self.task.done() or self.echoed >= target)
        if self.task.done():
            self.task.result()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


def metrics_text(service: TunnelService) -> str:
    registry = CollectorRegistry()
    register_metrics(service, registry)
    return generate_latest(registry).decode()


def refusals(caplog: pytest.LogCaptureFixture, node: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if "refused a peer" in r.getMessage() and f"node {node!r}" in r.getMessage()
    ]


async def test_removed_site_is_revoked_at_once_while_the_other_keeps_talking(
    star: Star, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="seabridge.tunnel")
    hub, site1, site2 = star.hub, star.site1, star.site2
    pinger = Pinger(await site1.open_flow("hub", "echo", TrafficClass.VOICE))
    from_site2 = await site2.open_flow("hub", "echo", TrafficClass.VOICE)
    site1_to_site2 = await site1.open_flow("site2", "echo", TrafficClass.CONTROL)
    try:
        await pinger.at_least(5)
        assert hub.switch.local_count == 2 and hub.switch.transit_count == 1

        applied = hub.apply_peers(hub_config(star.port, ["site1"]))

        assert (applied.removed, applied.added, applied.changed) == (("site2",), (), ())
        assert "site2" not in hub.links and "site2" not in hub.status()["links"]  # type: ignore[operator]
        assert hub.switch.local_count == 1 and hub.switch.transit_count == 0
        # Every flow that touched site2 is closed, at the hub, at site2 (told by the hub) and at site1.
        async with asyncio.timeout(10):
            reasons = [
                await star.at_hub["site2"].wait_closed(),
                await from_site2.wait_closed(),
                await star.at_site2["site1"].wait_closed(),
                await site1_to_site2.wait_closed(),
            ]
        assert all(r == "site2 revoked: no longer on hub's trusted list" for r in reasons), reasons
        # site2 redials, and the hub's trust check refuses it, saying why; its link stays down.
        await eventually(lambda: len(refusals(caplog, "site2")) >= 2)
        assert "not on the trusted list" in refusals(caplog, "site2")[0]
        assert hub.counters.peers_refused >= 2
        assert not site2.links["hub"].connected and "site2" not in hub.links
        text = metrics_text(hub)
        assert 'peer="site1"' in text and 'peer="site2"' not in text
        # Through all of it, site1's flow carried datagrams both ways, on the same link.
        await pinger.at_least(5)
        assert hub.links["site1"].connects == 1 and not pinger.flow.closed

        # Listed again: site2 reconnects by itself and carries flows.
        applied = hub.apply_peers(hub_config(star.port, ["site1", "site2"]))
        assert applied.added == ("site2",) and not applied.removed
        async with asyncio.timeout(20):
            await hub.wait_connected("site2")
            await site2.wait_connected("hub")
        await paths_up(hub, "site2")
        again = await site2.open_flow("hub", "echo", TrafficClass.VOICE)
        again.send(b"back")
        async with asyncio.timeout(5):
            assert await again.recv() == b"echo:back"
        await pinger.at_least(5)
        assert hub.links["site1"].connects == 1
    finally:
        await pinger.stop()


async def test_changed_peer_is_remade_and_unchanged_ones_are_left_alone(star: Star) -> None:
    hub, site1, site2 = star.hub, star.site1, star.site2
    flow1 = await site1.open_flow("hub", "echo", TrafficClass.VOICE)
    flow2 = await site2.open_flow("hub", "echo", TrafficClass.VOICE)
    link2 = hub.links["site2"]
    # site1's path gets a new priority: site1's link is made anew.
    new = tunnel_config(
        "hub",
        listen=[f"127.0.0.1:{star.port}"],
        peers=[
            {"name": "site1", "dial": False, "paths": [{"name": "leased", "priority": 50}]},
            {"name": "site2", "dial": False, "paths": [{"name": "leased", "priority": 10}]},
        ],
    )
    applied = hub.apply_peers(new)
    assert applied.changed == ("site1",) and not applied.added and not applied.removed
    async with asyncio.timeout(10):
        assert await flow1.wait_closed() == "link hub-site1 reconfigured"
    async with asyncio.timeout(20):
        await hub.wait_connected("site1")
    await paths_up(hub, "site1")
    assert hub.links["site1"].config.paths[0].priority == 50
    # site2's link and flow were not touched.
    assert hub.links["site2"] is link2 and link2.connects == 1 and not flow2.closed
    flow2.send(b"still")
    async with asyncio.timeout(5):
        assert await flow2.recv() == b"echo:still"


def test_restart_only_names_what_waits_for_a_restart() -> None:
    base = {
        "tunnel": {
            "enabled": True,
            "node": "hub",
            "peers": [{"name": "site1", "dial": False, "paths": [{"name": "leased"}]}],
        }
    }
    running = parse_config(base)
    new = parse_config(
        {
            "sip": {"ring_timeout_s": 20},
            "tunnel": {**base["tunnel"], "mtu": 1300, "peers": [], "routes": []},
        }
    )
    assert restart_only(running, new, tunnel_live=True) == ["sip", "tunnel.mtu"]
    assert restart_only(running, new, tunnel_live=False) == ["sip", "tunnel"]
    assert restart_only(running, running, tunnel_live=True) == []


async def test_sighup_during_start_up_is_applied_once_running(star: Star, tmp_path: Path) -> None:
    def write(sites: list[str]) -> None:
        peers = "".join(
            f'[[tunnel.peers]]\nname = "{s}"\ndial = false\npaths = [{{ name = "leased" }}]\n' for s in sites
        )
        path.write_text(f'[tunnel]\nenabled = true\nnode = "hub"\nlisten = ["127.0.0.1:{star.port}"]\n{peers}')

    path = tmp_path / "hub.toml"
    write(["site1", "site2"])
    reloader = ConfigReloader(path, load_config(path))
    write(["site1"])
    reloader.reload()  # before the tunnel runs: kept for later
    assert "site2" in star.hub.links
    reloader.started(star.hub)
    assert list(star.hub.links) == ["site1"]
    assert [p.name for p in reloader.running.tunnel.peers] == ["site1"]
