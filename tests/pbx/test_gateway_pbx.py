"""Issue 10 end to end: a real `seabridge run` trunked to a real Asterisk and watching it over AMI."""

from __future__ import annotations

import asyncio
import dataclasses
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest_asyncio

from tests.pbx.asterisk import AsteriskInstance, AsteriskPlan
from tests.support.audio import tone_present, write_tone
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.gateway import GatewayProcess, seabridge
from tests.support.ports import free_port
from tests.support.sipp import Sipp

ALICE_PASSWORD = "alice-pass-1"

# Every number and every on-net user at 0.10 CNY a minute, per second.
FLAT_TARIFF = """
name = "flat"
timezone = "Asia/Shanghai"

[[periods]]
name = "all"

[rates.flat]
price = "0.10"
increment = "1/1"

[[destinations]]
name = "Everywhere"
prefixes = ["@", "0", "1", "2", "3", "4", "5", "6", "7", "8", "9"]
categories = ["voice", "bridged", "video"]
rates = { all = "flat" }
"""


def charges(gw: GatewayProcess) -> list[tuple[str, str]]:
    with sqlite3.connect(gw.data_dir / "billing.db") as db:
        return [
            (r[0], r[1]) for r in db.execute("SELECT account, session_id FROM billing_ledger WHERE kind = 'charge'")
        ]


@dataclasses.dataclass
class Hq:
    gateway: GatewayProcess
    asterisk: AsteriskInstance
    folder: Path
    phones: list[Baresip] = dataclasses.field(default_factory=list)

    async def alice(self) -> Baresip:
        tone = write_tone(self.folder / "tone1000.wav", 1000, 60)
        p = Baresip(
            "alice",
            self.folder / "alice",
            PhoneAccount("alice", "acme", ALICE_PASSWORD, self.gateway.sip_address),
            tone,
        )
        self.phones.append(p)
        await p.start()
        await p.wait_registered()
        return p

    def records(self) -> list[sqlite3.Row]:
        with sqlite3.connect(self.gateway.data_dir / "gateway.db") as db:
            db.row_factory = sqlite3.Row
            return list(db.execute("SELECT * FROM call_records ORDER BY start"))

    async def wait_records(self, predicate: Any, count: int, timeout: float = 20) -> list[sqlite3.Row]:
        async with asyncio.timeout(timeout):
            while True:
                rows = [r for r in self.records() if predicate(r)]
                if len(rows) >= count:
                    return rows
                await asyncio.sleep(0.1)

    async def api(self, method: str, path: str, body: object | None = None) -> tuple[int, Any]:
        token = seabridge("token", "create", "--tenant", "acme", config=self.gateway.config_path).stdout.strip()
        async with aiohttp.ClientSession() as http:
            async with http.request(
                method,
                f"http://127.0.0.1:{self.gateway.http_port}{path}",
                json=body,
                headers={"Authorization": f"Bearer {token}"},
            ) as r:
                return r.status, await r.json()


@pytest_asyncio.fixture
async def hq(asterisk_root: Path, tmp_path: Path) -> AsyncIterator[Hq]:
    gw = GatewayProcess(tmp_path / "gw")
    gw.sip_port = free_port()
    plan = dataclasses.replace(AsteriskPlan.fresh(), trunk_port=gw.sip_port)
    ast = AsteriskInstance(asterisk_root, plan, tmp_path / "asterisk")
    ast.write_configs()
    gw.extra_config = f"""
[[tenants]]
domain = "acme"
digest_algorithms = ["MD5"]
dial_plan = [{{ prefix = "8", trunk = "hq", strip = 1 }}]

[[trunks]]
name = "hq"
tenant = "acme"
host = "127.0.0.1"
port = {plan.sip_port}
username = "{plan.trunk_user}"
password = "{plan.trunk_password}"
register = true
account = "hq-trunk@acme"
options_interval_s = 5

[pbx]
enabled = true
ami_port = {plan.ami_port}
ami_username = "{plan.ami_user}"
ami_secret = "{plan.ami_secret}"
trunk_endpoint = "{plan.trunk_user}"
trunk_account = "hq-trunk@acme"
tenant = "acme"
"""
    gw.write_config()
    gw.add_user("alice@acme", "kinshasa", ALICE_PASSWORD, number="3001")
    (gw.data_dir / "tariffs").mkdir(parents=True)
    (gw.data_dir / "tariffs" / "flat.toml").write_text(FLAT_TARIFF)
    for account, site in (("alice@acme", "kinshasa"), ("hq-trunk@acme", "beijing")):
        for args in (("account", account, "--site", site, "--postpaid"),
                     ("plan", account, "flat", "--from", "2026-01-01T00:00:00+08:00")):  # fmt: skip
            result = seabridge("billing", *args, config=gw.config_path)
            assert result.returncode == 0, result.stderr
    await ast.start()
    env = Hq(gw, ast, tmp_path)
    try:
        await gw.start()
        yield env
    finally:
        await asyncio.gather(*(p.stop() for p in env.phones), return_exceptions=True)
        await gw.stop()
        await ast.stop()
        ast.remove()


async def test_site_phone_calls_hq_echo_and_hears_itself(hq: Hq) -> None:
    alice = await hq.alice()
    await alice.dial("sip:8600@acme")  # 8 = HQ, 600 = Echo() in the PBX
    await alice.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(3)
    await alice.hangup()
    await alice.wait_event("CALL_CLOSED")
    (heard,) = alice.received_audio()
    assert tone_present(heard, 1000)  # her own tone, back from Asterisk through two relays of ours
    rows = await hq.wait_records(lambda r: r["leg"] == "a", 1)
    assert rows[0]["callee"] == "600" and rows[0]["account"] == "alice@acme" and rows[0]["ingress"] == 1
    await hq.wait_records(lambda r: r["leg"] == "pbx", 1)  # the PBX's own view of the call, via AMI
    async with asyncio.timeout(10):
        while not charges(hq.gateway):
            await asyncio.sleep(0.1)
    assert charges(hq.gateway) == [("alice@acme", rows[0]["session_id"])]  # one charge, however many views


async def test_hq_click_to_call_rings_both_ends_and_presence_is_notified(hq: Hq) -> None:
    plan = hq.asterisk.plan
    alice = await hq.alice()
    hq_phone = plan.phones[0]  # extension 2001, a sipp UAS at a fixed port that answers and echoes RTP
    uas = Sipp(("127.0.0.1", plan.sip_port), hq.folder / "hq-phone", "uas", local_port=hq_phone.port,
               extra=("-rtp_echo",))  # fmt: skip
    await uas.start()
    async with asyncio.timeout(20):  # the gateway logs in to AMI a moment after it starts
        while not (await hq.api("GET", "/api/pbx/status"))[1].get("ami_connected"):
            await asyncio.sleep(0.1)
    watcher = Sipp(
        hq.gateway.sip_address,
        hq.folder / "watcher",
        "subscribe_dialog.xml",
        keys={"user": "alice", "domain": "acme", "password": ALICE_PASSWORD, "target": f"8{hq_phone.extension}"},
        timeout_s=60,
    )
    try:
        await watcher.start()
        # Wait until the subscription holds (the gateway sent its first NOTIFY), then call.
        async with asyncio.timeout(20):
            while not any(r.get("msg") == "sip out" and r.get("first_line", "").startswith("NOTIFY")
                          for r in hq.gateway.log_records()):  # fmt: skip
                await asyncio.sleep(0.1)
        status, started = await hq.api("POST", "/api/calls", {"from": hq_phone.extension, "to": "alice@acme"})
        assert status == 202, started
        await alice.wait_event("CALL_INCOMING", timeout=30)  # the HQ phone answered first, then alice rang
        await alice.accept()
        await alice.wait_event("CALL_ESTABLISHED")
        result = await watcher.wait(timeout=40)
        assert result.ok, result.output[-2000:]  # a NOTIFY showed 2001 on a call
        await asyncio.sleep(2)
        await alice.hangup()
        await alice.wait_event("CALL_CLOSED")
    finally:
        await watcher.stop()
        await uas.stop()
    assert tone_present(alice.received_audio()[0], 1000)  # echoed by the HQ phone
    rows = await hq.wait_records(lambda r: r["session_id"] == started["session_id"], 1)
    inbound = [r for r in rows if r["leg"] == "a"]
    assert len(inbound) == 1 and inbound[0]["account"] == "hq-trunk@acme" and inbound[0]["callee"] == "alice@acme"
    async with asyncio.timeout(10):
        while not charges(hq.gateway):
            await asyncio.sleep(0.1)
    assert charges(hq.gateway) == [("hq-trunk@acme", started["session_id"])]  # HQ's call, charged to the trunk
    status, body = await hq.api("GET", "/api/trunks")
    assert body["trunks"][0]["registration"] == "registered" and body["trunks"][0]["reachable"] is True
