"""Issue 5 through the gateway: prepaid credit ends a real call; a crash never double-charges."""

from __future__ import annotations

import asyncio
import re
import signal
import sqlite3
from collections.abc import AsyncIterator
from decimal import Decimal
from pathlib import Path

import pytest
import pytest_asyncio

from tests.integration.conftest import PASSWORDS, SITES, register_sipp
from tests.support.gateway import GatewayProcess, seabridge
from tests.support.sipp import Sipp

# 6 CNY a minute, per second: a 0.50 CNY credit buys 5 seconds of talk.
ONNET_TARIFF = """
name = "onnet"
timezone = "Asia/Shanghai"
currency = "CNY"
rounding = "half_up"
decimals = 2

[[periods]]
name = "all"

[rates.per-second]
price = "6.00"
increment = "1/1"

[[destinations]]
name = "On-net"
prefixes = ["@"]
categories = ["voice", "bridged", "video"]
rates = { all = "per-second" }
"""


def cli(gw: GatewayProcess, *args: str) -> str:
    result = seabridge("billing", *args, config=gw.config_path)
    assert result.returncode == 0, result.stderr
    return result.stdout


def ledger(gw: GatewayProcess, account: str) -> list[tuple[str, int]]:
    with sqlite3.connect(gw.data_dir / "billing.db") as db:
        return [
            (r[0], r[1]) for r in db.execute("SELECT kind, amount FROM billing_ledger WHERE account = ?", (account,))
        ]


@pytest_asyncio.fixture
async def billed(tmp_path: Path) -> AsyncIterator[tuple[GatewayProcess, Path]]:
    gw = GatewayProcess(
        tmp_path / "gw",
        extra_config='[[tenants]]\ndomain = "acme"\ndigest_algorithms = ["MD5"]\n\n[billing]\ncheckpoint_interval_s = 1\n',
    )
    gw.write_config()
    (gw.data_dir / "tariffs").mkdir(parents=True)
    (gw.data_dir / "tariffs" / "onnet.toml").write_text(ONNET_TARIFF)
    for address in ("alice@acme", "bob@acme"):
        gw.add_user(address, SITES[address], PASSWORDS[address])
    cli(gw, "account", "alice@acme", "--site", "kinshasa", "--prepaid")
    cli(gw, "plan", "alice@acme", "onnet", "--from", "2026-01-01T00:00:00+08:00")
    cli(gw, "topup", "alice@acme", "0.50", "--reference", "test-topup")
    await gw.start()
    try:
        yield gw, tmp_path
    finally:
        await gw.stop()


async def register_uas(gw: GatewayProcess, folder: Path) -> Sipp:
    uas = Sipp(gw.sip_address, folder / "uas", "uas", extra=("-aa",))
    await register_sipp(gw.sip_address, folder / "reg", uas.local_port)
    await uas.start()
    return uas


def charged(gw: GatewayProcess) -> Decimal:
    charges = [amount for kind, amount in ledger(gw, "alice@acme") if kind in ("charge", "refund")]
    return -Decimal(sum(charges)).scaleb(-6)


async def test_prepaid_credit_running_out_ends_the_call_within_one_increment(
    billed: tuple[GatewayProcess, Path],
) -> None:
    gw, folder = billed
    uas = await register_uas(gw, folder)
    try:
        caller = Sipp(
            gw.sip_address,
            folder / "uac",
            "uac_wait_bye.xml",
            keys={"user": "alice", "domain": "acme", "password": PASSWORDS["alice@acme"], "callee": "bob",
                  "wait_ms": "30000"},
        )  # fmt: skip
        started = asyncio.get_running_loop().time()
        result = await caller.run(timeout=60)
        lasted = asyncio.get_running_loop().time() - started
        assert result.ok, result.output[-3000:]  # the gateway hung up on the caller (BYE received)
    finally:
        await uas.stop()
    print(f"call with 0.50 CNY of credit at 0.10 CNY/s ended after {lasted:.1f} s")
    async with asyncio.timeout(10):
        while not any(k == "charge" for k, _ in ledger(gw, "alice@acme")):
            await asyncio.sleep(0.1)
    spent = charged(gw)
    print(f"charged {spent} CNY of a 0.50 CNY credit")
    assert Decimal("0.40") <= spent <= Decimal("0.50")  # within one increment (0.10), never above
    balance = cli(gw, "balance", "alice@acme")
    assert re.search(r"0\.(0|1)\d", balance), balance


@pytest.mark.parametrize("payment", ["prepaid", "postpaid"])
async def test_kill_9_mid_call_then_restart_charges_exactly_once(
    billed: tuple[GatewayProcess, Path], payment: str
) -> None:
    # Prepaid: billing's own open-call checkpoint charges the call (capped at what was
    # reserved). Postpaid without a limit: live billing writes nothing for the call, and the
    # gateway's checkpoint of its record is what the restart charges from.
    gw, folder = billed
    if payment == "postpaid":
        cli(gw, "account", "alice@acme", "--site", "kinshasa", "--postpaid")
    else:
        cli(gw, "topup", "alice@acme", "50.00", "--reference", "big-topup")  # enough for the whole call
    uas = await register_uas(gw, folder)
    caller = Sipp(
        gw.sip_address,
        folder / "uac",
        "uac_wait_bye.xml",
        keys={"user": "alice", "domain": "acme", "password": PASSWORDS["alice@acme"], "callee": "bob",
              "wait_ms": "60000"},
    )  # fmt: skip
    await caller.start()
    try:
        await asyncio.sleep(4)  # answered, several checkpoints taken
        await gw.stop(signal.SIGKILL)
        await caller.stop()
        await uas.stop()
        await gw.start()
        async with asyncio.timeout(15):
            while sum(1 for k, _ in ledger(gw, "alice@acme") if k == "charge") < 1:
                await asyncio.sleep(0.1)
        await gw.stop()  # and once more: a second start finds nothing new to charge
        await gw.start()
        await asyncio.sleep(1)
    finally:
        await caller.stop()
        await uas.stop()
    charges = [a for k, a in ledger(gw, "alice@acme") if k == "charge"]
    print(f"charges after kill -9 and two restarts: {charges}")
    assert len(charges) == 1 and charges[0] < 0
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        assert db.execute("SELECT count(*) FROM call_records").fetchone()[0] == 1
