"""Two `seabridge run` gateways on loopback, trunked through their tunnel: calls both ways, TV forward.

Real gateways, real baresip phones, the tunnel between the gateways on 127.0.0.1 (the
namespace test in test_netns_gateways.py adds the hub, delay lines and a failover).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import pytest_asyncio

from tests.support.audio import tone_present, write_tone
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.gateway import GatewayProcess, seabridge

from .agent import TS_PACKET, ts_datagram
from .gateways import Pair, hq_config, site_config, trunk_pair
from .helpers import free_port
from .pkihelp import TestCa


async def api(gw: GatewayProcess, path: str) -> Any:
    token = getattr(gw, "_token", None)
    if token is None:
        token = seabridge("token", "create", "--admin", config=gw.config_path).stdout.strip()
        gw._token = token  # type: ignore[attr-defined]
    return await gw.api_get(path, token)


async def until(gw: GatewayProcess, path: str, check: Any, within: float = 20.0) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        body = await api(gw, path)
        if check(body):
            return body
        if loop.time() > deadline:
            raise AssertionError(f"{gw.folder.name} {path}: condition not met: {body}")
        await asyncio.sleep(0.1)


def billing_calls(gw: GatewayProcess, session_id: str) -> set[tuple[str, str]]:
    with sqlite3.connect(gw.data_dir / "billing.db") as db:
        return {
            (r[0], r[1])
            for r in db.execute("SELECT leg, account FROM billing_calls WHERE session_id = ?", (session_id,))
        }


def records(gw: GatewayProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM call_records ORDER BY start"))


async def wait_records(gw: GatewayProcess, count: int) -> list[sqlite3.Row]:
    """The call records, once there are ``count`` (a record is written as its call's last BYE is answered)."""
    async with asyncio.timeout(10):
        while len(rows := records(gw)) < count:
            await asyncio.sleep(0.05)
    return rows


class Loopback:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.tunnel_port = free_port()
        self.tv_target = free_port()
        self.tv_listen = free_port()
        site_tunnel = f"""
[tunnel]
enabled = true
node = "site1"
probe_interval_ms = 100
[[tunnel.peers]]
name = "hq"
paths = [{{ name = "leased", address = "127.0.0.1", port = {self.tunnel_port} }}]
[[tunnel.services]]
name = "tv-cctv4"
target = "127.0.0.1:{self.tv_target}"
"""
        hq_tunnel = f"""
[tunnel]
enabled = true
node = "hq"
listen = ["127.0.0.1:{self.tunnel_port}"]
probe_interval_ms = 100
[[tunnel.peers]]
name = "site1"
dial = false
paths = [{{ name = "leased" }}]
[[tunnel.forwards]]
name = "cctv4"
listen = "127.0.0.1:{self.tv_listen}"
peer = "site1"
service = "tv-cctv4"
traffic_class = "tv"
"""
        # The site replicates its ratings to HQ (DECISIONS.md: store-and-forward over the tunnel).
        site_billing = '[billing]\nreplicate_to = "hq"\n'
        site = GatewayProcess(
            folder / "site", extra_config=site_config(site_tunnel, extra=site_billing), log_level="info"
        )
        hq = GatewayProcess(folder / "hq", extra_config=hq_config(hq_tunnel), log_level="info")
        self.pair: Pair = trunk_pair(site, hq, TestCa(), "site1")
        self.phones: list[Baresip] = []

    async def phone(self, gw: GatewayProcess, user: str, domain: str, password: str, freq: int) -> Baresip:
        tone = write_tone(self.folder / f"tone{freq}.wav", freq, 60)
        p = Baresip(user, self.folder / f"phone-{user}", PhoneAccount(user, domain, password, gw.sip_address), tone)
        self.phones.append(p)
        await p.start()
        await p.wait_registered()
        return p


@pytest_asyncio.fixture(scope="module")
async def loopback(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Loopback]:
    topo = Loopback(tmp_path_factory.mktemp("tunnel-trunks"))
    try:
        started = await asyncio.gather(topo.pair.hq.start(), topo.pair.site.start(), return_exceptions=True)
        for failure in (r for r in started if r is not None):
            raise failure
        yield topo
    finally:
        await asyncio.gather(*(p.stop() for p in topo.phones), return_exceptions=True)
        await asyncio.gather(topo.pair.site.stop(), topo.pair.hq.stop(), return_exceptions=True)


def trunk(body: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = {t["name"]: t for t in body["trunks"]}[name]
    return found


async def test_calls_both_ways_ride_the_tunnel_and_their_flows_close(loopback: Loopback) -> None:
    site, hq = loopback.pair.site, loopback.pair.hq
    registered = await until(
        site, "/api/trunks", lambda b: trunk(b, "hq")["registration"] == "registered" and trunk(b, "hq")["reachable"]
    )
    print("\nsite trunk to HQ:", trunk(registered, "hq"))
    alice = await loopback.phone(site, "alice", "acme", "alice-pass-1", 1000)
    ceo = await loopback.phone(hq, "ceo", "hq", "ceo-pass-100", 1500)

    # Site -> HQ (the site authenticates with its trunk credentials, through the tunnel).
    await alice.dial("sip:8100@acme")
    await ceo.wait_event("CALL_INCOMING")
    await ceo.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    during = await until(site, "/api/tunnel", lambda b: any(m["to_tunnel"] > 50 for m in b["media"]))
    hq_during = await api(hq, "/api/tunnel")
    (stream,) = during["media"]
    (far,) = hq_during["media"]
    assert stream["flow"] and far["flow"] and stream["session_id"] == far["session_id"]
    assert stream["local"].startswith("127.0.0.1:") and far["local"].startswith("127.0.0.1:")
    await asyncio.sleep(2)
    await alice.hangup()
    await ceo.wait_event("CALL_CLOSED")
    assert tone_present(ceo.received_audio()[0], 1000) and tone_present(alice.received_audio()[0], 1500)
    for gw in (site, hq):
        after = await until(gw, "/api/tunnel", lambda b: not b["media"])
        assert after["flows"]["local"] == 1  # only the trunk's SIP flow stays open
    (site_record,) = await wait_records(site, 1)
    (hq_record,) = await wait_records(hq, 1)
    assert hq_record["session_id"] == site_record["session_id"] == stream["session_id"]
    assert site_record["callee"] == "100" and site_record["account"] == "alice@acme"
    # Rated once: where alice's call entered; HQ keeps its leg for audit (DECISIONS.md).
    assert site_record["ingress"] == 1 and hq_record["ingress"] == 0
    assert site_record["leg"] == "a" and hq_record["leg"] == "a@test-gw"  # HQ names its transit leg after itself
    # The site's rating reached HQ's ledger as it was rated, over the tunnel's control channel.
    async with asyncio.timeout(15):
        # HQ's own audit leg and the site's replicated rating arrive in either order.
        while len(replicated := billing_calls(hq, site_record["session_id"])) < 2:
            await asyncio.sleep(0.1)
    assert replicated == {("a", "alice@acme"), ("a@test-gw", "kinshasa@hq")}

    # HQ -> site: the site's trunk knows HQ by the tunnel node its messages come from.
    mark = len(alice.events)
    await ceo.dial("sip:72001@hq")
    await alice.wait_event("CALL_INCOMING", after=mark)
    await alice.accept()
    await ceo.wait_event("CALL_ESTABLISHED", after=mark)
    await until(hq, "/api/tunnel", lambda b: any(m["to_tunnel"] > 50 for m in b["media"]))
    await ceo.hangup()
    await alice.wait_event("CALL_CLOSED", after=mark)
    inbound = (await wait_records(site, 2))[-1]
    assert inbound["caller"] == "100" and inbound["callee"] == "alice@acme" and inbound["account"] == "hq-pbx@acme"
    assert inbound["ingress"] == 0  # the CEO's call entered, and is rated, at HQ
    assert tone_present(alice.received_audio()[-1], 1500) and tone_present(ceo.received_audio()[-1], 1000)
    await until(site, "/api/tunnel", lambda b: not b["media"])


async def test_a_tv_forward_from_the_gateway_config_carries_udp_mpeg_ts(loopback: Loopback) -> None:
    site = loopback.pair.site
    await until(site, "/api/tunnel", lambda b: b["links"]["hq"]["connected"])
    loop = asyncio.get_running_loop()
    player = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    player.bind(("127.0.0.1", loopback.tv_target))
    player.setblocking(False)
    source = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    indices: list[int] = []
    heard = asyncio.Event()

    async def play() -> None:
        while True:
            data = await loop.sock_recv(player, 2048)
            indices.extend(int.from_bytes(data[off + 4 : off + 8], "big") for off in range(0, len(data), TS_PACKET))
            heard.set()

    player_task = asyncio.create_task(play())
    sent = 0
    try:
        # A forward opens its flow on the source's first datagram: send until the player hears one.
        async with asyncio.timeout(20):
            while not heard.is_set():
                source.sendto(ts_datagram(sent), ("127.0.0.1", loopback.tv_listen))
                sent += 1
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(heard.wait(), 0.05)
        warm_up = sent
        for _ in range(200):
            source.sendto(ts_datagram(sent), ("127.0.0.1", loopback.tv_listen))
            sent += 1
            await asyncio.sleep(0.005)
        async with asyncio.timeout(20):
            while not indices or indices[-1] < sent * 7 - 1:
                await asyncio.sleep(0.05)
    finally:
        player_task.cancel()
        player.close()
        source.close()
    print(f"\nTV forward: {len(indices)} TS packets after {warm_up} datagrams of warm-up")
    # Complete and in order from the first packet the flow carried to the last one sent.
    assert indices == list(range(indices[0], sent * 7)) and indices[0] < warm_up * 7


async def test_tunnel_status_is_for_admin_tokens_only(loopback: Loopback) -> None:
    site = loopback.pair.site
    tenant_token = seabridge("token", "create", "--tenant", "acme", config=site.config_path).stdout.strip()
    async with aiohttp.ClientSession() as http:
        url = f"http://127.0.0.1:{site.http_port}/api/tunnel"
        async with http.get(url) as anonymous:
            assert anonymous.status == 401
        async with http.get(url, headers={"Authorization": f"Bearer {tenant_token}"}) as tenant:
            assert tenant.status == 403
    status = await api(site, "/api/tunnel")
    assert status["node"] == "site1" and status["trunks"][0]["name"] == "hq"
