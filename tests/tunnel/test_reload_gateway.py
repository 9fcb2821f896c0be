"""SIGHUP to a running `seabridge run` hub: a site removed from its config file is revoked live.

The hub is a real gateway process; its two sites are tunnel services in the test process,
dialling it on 127.0.0.1 with certificates from the same test CA. State is read from the hub's
HTTP status API, its /metrics and its JSON log.
"""

from __future__ import annotations

import asyncio
import signal
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from gateway.tunnel.flows import Flow
from gateway.tunnel.frame import TrafficClass
from gateway.tunnel.service import TunnelService
from tests.support.gateway import REPO, GatewayProcess, seabridge

from .gateways import install_identity
from .helpers import free_port, tunnel_config
from .pkihelp import TestCa


def hub_tunnel(port: int, sites: list[str], extra: str = "") -> str:
    peers = "".join(f'[[tunnel.peers]]\nname = "{s}"\ndial = false\npaths = [{{ name = "leased" }}]\n' for s in sites)
    return f"""
[tunnel]
enabled = true
node = "hub"
listen = ["127.0.0.1:{port}"]
probe_interval_ms = 100
keepalive_s = 1.0
{extra}
{peers}
"""


@dataclass
class Hub:
    gw: GatewayProcess
    port: int
    site1: TunnelService
    site2: TunnelService
    token: str = ""

    def rewrite(self, tunnel: str, sip_extra: str = "") -> None:
        self.gw.extra_config, self.gw.sip_extra = tunnel, sip_extra
        self.gw.write_config()

    def hangup(self) -> None:
        assert self.gw.process is not None
        self.gw.process.send_signal(signal.SIGHUP)

    async def status(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http:
            async with http.get(
                f"http://127.0.0.1:{self.gw.http_port}/api/tunnel", headers={"Authorization": f"Bearer {self.token}"}
            ) as r:
                assert r.status == 200, await r.text()
                body: dict[str, Any] = await r.json()
                return body

    async def until_status(self, check: Callable[[dict[str, Any]], bool], within: float = 15.0) -> dict[str, Any]:
        async with asyncio.timeout(within):
            while not check(body := await self.status()):
                await asyncio.sleep(0.05)
        return body

    async def log_line(self, match: Callable[[dict[str, Any]], bool], within: float = 15.0) -> dict[str, Any]:
        """The first record of the hub's JSON log that ``match``es, waiting for it to be written."""
        async with asyncio.timeout(within):
            while True:
                for record in self.gw.log_records():
                    if match(record):
                        return record
                await asyncio.sleep(0.05)


@pytest_asyncio.fixture
async def hub(tmp_path: Path) -> AsyncIterator[Hub]:
    ca = TestCa()
    port = free_port()
    gw = GatewayProcess(tmp_path / "hub", extra_config=hub_tunnel(port, ["site1", "site2"]), log_level="info")
    install_identity(gw, ca, "hub")
    gw.write_config()
    sites = [
        TunnelService(
            tunnel_config(
                name,
                peers=[{"name": "hub", "paths": [{"name": "leased", "address": "127.0.0.1", "port": port}]}],
                routes=[{"destination": "*", "via": "hub"}],
            ),
            ca.identity(name),
        )
        for name in ("site1", "site2")
    ]
    topo = Hub(gw, port, *sites)
    try:
        await gw.start()
        topo.token = seabridge("token", "create", "--admin", config=gw.config_path).stdout.strip()
        for site in sites:
            await site.start()
        async with asyncio.timeout(20):
            for site in sites:
                await site.wait_connected("hub")
        yield topo
    finally:
        for site in sites:
            await site.stop()
        await gw.stop()


def echo(flow: Flow) -> None:
    flow.set_receiver(lambda data: flow.send(b"echo:" + data))


def connected(*names: str) -> Callable[[dict[str, Any]], bool]:
    return lambda body: all(body["links"].get(n, {}).get("connected") for n in names)


async def test_sighup_revokes_a_removed_site_and_a_bad_file_changes_nothing(hub: Hub) -> None:
    gw = hub.gw
    await hub.until_status(connected("site1", "site2"))
    # A control flow site1 -> site2 through the hub process (resent if lost, so it cannot flake).
    hub.site2.serve("echo", echo)
    through = await hub.site1.open_flow("site2", "echo", TrafficClass.CONTROL)
    through.send(b"before")
    async with asyncio.timeout(10):
        assert await through.recv() == b"echo:before"

    hub.rewrite(hub_tunnel(hub.port, ["site1"]))
    hub.hangup()

    record = await hub.log_line(lambda r: r["msg"] == "configuration reloaded")
    assert record["peers_removed"] == "site2" and record["peers_added"] == ""
    body = await hub.until_status(lambda b: "site2" not in b["links"])
    assert body["links"]["site1"]["connected"]
    async with asyncio.timeout(10):
        reason = await through.wait_closed()
    assert reason == "site2 revoked: no longer on hub's trusted list"
    # site2 dials again and is refused by the trust check, which says why.
    refused = await hub.log_line(lambda r: "refused a peer" in r["msg"] and "'site2'" in r["msg"])
    assert "not on the trusted list" in refused["msg"]
    metrics = await gw.metrics()
    assert 'seabridge_tunnel_link_up{peer="site1"}' in metrics
    assert not any('peer="site2"' in name for name in metrics)
    assert metrics['seabridge_tunnel_node_dropped_total{reason="peers_refused"}'] >= 1

    # A malformed file (site2 back, but a bad value): logged with its key, nothing changes.
    hub.rewrite(hub_tunnel(hub.port, ["site1", "site2"], extra='mtu = "big"'))
    hub.hangup()
    bad = await hub.log_line(lambda r: r["msg"].startswith("configuration not reloaded"))
    assert bad["key"] == "tunnel.mtu" and bad["level"] == "error"
    assert "tunnel.mtu: expected an integer" in bad["msg"]
    body = await hub.status()
    assert list(body["links"]) == ["site1"] and body["links"]["site1"]["connected"]
    assert not hub.site2.links["hub"].connected
    assert gw.process is not None and gw.process.returncode is None

    # Fixed, with a SIP change besides: site2 is listed again and reconnects; SIP waits for a restart.
    hub.rewrite(hub_tunnel(hub.port, ["site1", "site2"]), sip_extra="user_agent = 'Seabridge hub'")
    hub.hangup()
    await hub.log_line(lambda r: r["msg"] == "configuration reloaded" and r["peers_added"] == "site2")
    await hub.log_line(lambda r: r["msg"] == "configuration sip changed; applies at restart")
    await hub.until_status(connected("site1", "site2"))
    async with asyncio.timeout(20):
        await hub.site2.wait_connected("hub")
    # site1's link was never touched: one connection from start to end.
    assert hub.site1.links["hub"].connects == 1


async def test_sighup_to_the_tunnel_alone(tmp_path: Path) -> None:
    """`seabridge tunnel run` (a hub running only the tunnel) takes SIGHUP the same way."""
    ca = TestCa()
    port = free_port()
    holder = GatewayProcess(tmp_path)  # only for its data_dir layout and install_identity
    install_identity(holder, ca, "hub")
    config = tmp_path / "tunnel.toml"

    def write(sites: list[str]) -> None:
        config.write_text(f'node_name = "hub"\ndata_dir = "{holder.data_dir}"\n{hub_tunnel(port, sites)}')

    write(["site1"])
    site = TunnelService(
        tunnel_config(
            "site1", peers=[{"name": "hub", "paths": [{"name": "leased", "address": "127.0.0.1", "port": port}]}]
        ),
        ca.identity("site1"),
    )
    log_path = tmp_path / "tunnel.log"
    with log_path.open("wb") as log:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "gateway.cli", "tunnel", "run", "--config", str(config),
            cwd=REPO, stdout=asyncio.subprocess.DEVNULL, stderr=log,
        )  # fmt: skip
    try:
        await site.start()
        async with asyncio.timeout(20):
            await site.wait_connected("hub")
        write([])
        process.send_signal(signal.SIGHUP)
        async with asyncio.timeout(15):
            while "node 'site1' is signed by our CA but not on the trusted list" not in log_path.read_text():
                await asyncio.sleep(0.05)
        text = log_path.read_text()
        assert "peer site1 revoked: removed from the peers list" in text
        assert process.returncode is None and not site.links["hub"].connected
    finally:
        await site.stop()
        if process.returncode is None:
            process.terminate()
        await process.wait()
