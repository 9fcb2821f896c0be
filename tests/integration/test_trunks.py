"""Issue 3 trunks: a site gateway trunked to a second gateway acting as the HQ PBX."""

from __future__ import annotations

import asyncio
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
from tests.support.ports import free_port

SITE_PASSWORD = "site-trunk-pass-9"


def records(gw: GatewayProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM call_records ORDER BY start"))


async def wait_records(gw: GatewayProcess, count: int) -> list[sqlite3.Row]:
    for _ in range(200):
        rows = records(gw)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"{gw.folder.name}: {len(records(gw))} records, expected {count}")


async def api(gw: GatewayProcess, path: str) -> Any:
    token = seabridge("token", "create", "--admin", config=gw.config_path).stdout.strip()
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"http://127.0.0.1:{gw.http_port}{path}", headers={"Authorization": f"Bearer {token}"}
        ) as r:
            return await r.json()


class Topology:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.site = GatewayProcess(folder / "site")
        self.hq = GatewayProcess(folder / "hq")
        self.phones: list[Baresip] = []
        for gw in (self.site, self.hq):
            gw.sip_port, gw.http_port = free_port(), free_port()
        self.site.write_config()  # allocate the media range now
        self.hq.write_config()
        self.site.extra_config = f"""
[[tenants]]
domain = "acme"
digest_algorithms = ["MD5"]
dial_plan = [{{ prefix = "8", trunk = "hq", strip = 1 }}, {{ prefix = "9", trunk = "refused", strip = 1 }}]

[[trunks]]
name = "hq"
tenant = "acme"
host = "127.0.0.1"
port = {self.hq.sip_port}
domain = "hq"
username = "kinshasa"
password = "{SITE_PASSWORD}"
register = true
account = "hq-pbx@acme"
options_interval_s = 1

[[trunks]]
name = "refused"
tenant = "acme"
host = "127.0.0.1"
port = {self.hq.sip_port}
domain = "hq"
username = "kinshasa"
password = "not-the-password"
register = true
inbound = false
options_interval_s = 0
"""
        self.hq.extra_config = f"""
[[tenants]]
domain = "hq"
digest_algorithms = ["MD5"]
dial_plan = [{{ prefix = "7", trunk = "site", strip = 1 }}]

[[trunks]]
name = "site"
tenant = "hq"
host = "127.0.0.1"
port = {self.site.sip_port}
domain = "acme"
# The site authenticates with digest (it registered as kinshasa); not IP-identified.
inbound = false
options_interval_s = 0
"""
        self.site.write_config()
        self.hq.write_config()
        self.site.add_user("alice@acme", "kinshasa", "alice-pass-1", number="2001")
        self.hq.add_user("ceo@hq", "beijing", "ceo-pass-100", number="100")
        self.hq.add_user("kinshasa@hq", "kinshasa", SITE_PASSWORD)

    async def phone(self, gw: GatewayProcess, user: str, domain: str, password: str, freq: int) -> Baresip:
        tone = write_tone(self.folder / f"tone{freq}.wav", freq, 60)
        p = Baresip(user, self.folder / f"phone-{user}", PhoneAccount(user, domain, password, gw.sip_address), tone)
        self.phones.append(p)
        await p.start()
        await p.wait_registered()
        return p


@pytest_asyncio.fixture
async def topology(tmp_path: Path) -> AsyncIterator[Topology]:
    topo = Topology(tmp_path)
    await topo.hq.start()
    await topo.site.start()
    try:
        yield topo
    finally:
        await asyncio.gather(*(p.stop() for p in topo.phones), return_exceptions=True)
        await topo.site.stop()
        await topo.hq.stop()


async def wait_trunk(gw: GatewayProcess, name: str, **expected: object) -> dict[str, Any]:
    for _ in range(100):
        trunks = {t["name"]: t for t in (await api(gw, "/api/trunks"))["trunks"]}
        if all(trunks[name].get(k) == v for k, v in expected.items()):
            return trunks[name]
        await asyncio.sleep(0.1)
    raise AssertionError(f"trunk {name} never reached {expected}: {trunks[name]}")


async def test_calls_both_ways_over_the_trunk(topology: Topology) -> None:
    site, hq = topology.site, topology.hq
    await wait_trunk(site, "hq", registration="registered", reachable=True)
    alice = await topology.phone(site, "alice", "acme", "alice-pass-1", 1000)
    ceo = await topology.phone(hq, "ceo", "hq", "ceo-pass-100", 1500)

    # Site -> HQ: alice dials 8 + the HQ extension; the site authenticates to HQ with its trunk credentials.
    await alice.dial("sip:8100@acme")
    await ceo.wait_event("CALL_INCOMING")
    await ceo.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(2)
    await alice.hangup()
    await ceo.wait_event("CALL_CLOSED")
    (site_record,) = await wait_records(site, 1)
    (hq_record,) = await wait_records(hq, 1)
    assert site_record["callee"] == "100" and site_record["account"] == "alice@acme"
    assert hq_record["session_id"] == site_record["session_id"]  # one Session-ID across both gateways
    assert tone_present(ceo.received_audio()[0], 1000) and tone_present(alice.received_audio()[0], 1500)

    # HQ -> site: the CEO dials 7 + alice's number; the site knows HQ by its address and bills the trunk.
    mark = len(alice.events)
    await ceo.dial("sip:72001@hq")
    await alice.wait_event("CALL_INCOMING", after=mark)
    await alice.accept()
    await ceo.wait_event("CALL_ESTABLISHED", after=mark)
    await ceo.hangup()
    await alice.wait_event("CALL_CLOSED", after=mark)
    inbound = (await wait_records(site, 2))[-1]
    assert inbound["caller"] == "100" and inbound["callee"] == "alice@acme"
    assert inbound["account"] == "hq-pbx@acme" and inbound["ingress"] == 1


async def test_refused_and_down_trunks_fail_fast_with_a_clear_answer(topology: Topology) -> None:
    site, hq = topology.site, topology.hq
    refused = await wait_trunk(site, "refused", registration="refused")
    assert refused["last_status"] == 401
    alice = await topology.phone(site, "alice", "acme", "alice-pass-1", 1000)
    started = asyncio.get_running_loop().time()
    await alice.dial("sip:9100@acme")
    closed = await alice.wait_event("CALL_CLOSED")
    assert "503" in closed["param"], closed
    print(f"call to a refused trunk failed after {asyncio.get_running_loop().time() - started:.2f} s")

    await hq.stop()
    await wait_trunk(site, "hq", reachable=False)
    mark = len(alice.events)
    started = asyncio.get_running_loop().time()
    await alice.dial("sip:8100@acme")
    closed = await alice.wait_event("CALL_CLOSED", after=mark)
    assert "503" in closed["param"], closed
    print(f"call to a down trunk failed after {asyncio.get_running_loop().time() - started:.2f} s")
    down = [r for r in site.log_records() if r.get("msg") == "trunk down"]
    assert down and down[0]["trunk"] == "hq"


@pytest.mark.parametrize("digits", ["8"])
def test_dial_rule_needs_a_number_after_the_prefix(digits: str) -> None:
    from gateway.config import DialRule
    from gateway.routing import route_number

    rules = (DialRule(prefix="8", trunk="hq", strip=1), DialRule(prefix="86", trunk="cn", strip=0, prepend="+"))
    assert route_number(rules, digits) is None
    assert route_number(rules, "8100").trunk == "hq"  # type: ignore[union-attr]
    assert route_number(rules, "8610").number == "+8610"  # type: ignore[union-attr]  # longest prefix wins
