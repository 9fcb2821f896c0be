"""Issue 3 operation: SIGTERM ends calls cleanly; kill -9 loses nothing; max call duration."""

from __future__ import annotations

import asyncio
import signal
import sqlite3
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path

import pytest_asyncio

from tests.integration.conftest import PASSWORDS, SITES, register_sipp
from tests.support.audio import write_tone
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.gateway import GatewayProcess


def records(gw: GatewayProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM call_records"))


def open_calls(gw: GatewayProcess) -> int:
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        return int(db.execute("SELECT count(*) FROM open_calls").fetchone()[0])


async def first_record(gw: GatewayProcess) -> None:
    """Wait (up to 5 s) for the gateway to commit a call record."""
    for _ in range(100):
        if records(gw):
            return
        await asyncio.sleep(0.05)


async def own_gateway(folder: Path, extra: str = "", ring_timeout_s: int | None = None) -> GatewayProcess:
    gw = GatewayProcess(
        folder,
        extra_config='[[tenants]]\ndomain = "acme"\ndigest_algorithms = ["MD5"]\n' + extra,
    )
    gw.write_config()
    if ring_timeout_s is not None:
        text = gw.config_path.read_text().replace("ring_timeout_s = 30", f"ring_timeout_s = {ring_timeout_s}")
        gw.config_path.write_text(text)
    for address in ("alice@acme", "bob@acme"):
        gw.add_user(address, SITES[address], PASSWORDS[address])
    await gw.start()
    return gw


@pytest_asyncio.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[Path, list[Baresip]]]:
    phones: list[Baresip] = []
    try:
        yield tmp_path, phones
    finally:
        await asyncio.gather(*(p.stop() for p in phones), return_exceptions=True)


async def ring_between(gw: GatewayProcess, tmp_path: Path, phones: list[Baresip]) -> tuple[Baresip, Baresip]:
    """Register alice and bob; alice calls bob, whose phone is ringing when this returns."""
    tone = write_tone(tmp_path / "tone.wav", 1000, 60)
    made = []
    for address in ("alice@acme", "bob@acme"):
        user, domain = address.split("@")
        p = Baresip(user, tmp_path / user, PhoneAccount(user, domain, PASSWORDS[address], gw.sip_address), tone)
        phones.append(p)
        await p.start()
        await p.wait_registered()
        made.append(p)
    alice, bob = made
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    return alice, bob


async def call_between(gw: GatewayProcess, tmp_path: Path, phones: list[Baresip]) -> tuple[Baresip, Baresip]:
    alice, bob = await ring_between(gw, tmp_path, phones)
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    return alice, bob


async def test_sigterm_ends_calls_on_both_legs_and_writes_their_records(
    pair: tuple[Path, list[Baresip]],
) -> None:
    tmp_path, phones = pair
    gw = await own_gateway(tmp_path / "gw")
    try:
        alice, bob = await call_between(gw, tmp_path, phones)
        await asyncio.sleep(1)
        assert gw.process is not None
        gw.process.send_signal(signal.SIGTERM)
        await alice.wait_event("CALL_CLOSED")
        await bob.wait_event("CALL_CLOSED")
        assert await asyncio.wait_for(gw.process.wait(), 20) == 0
    finally:
        await gw.stop()
    (record,) = records(gw)
    assert record["disposition"] == "answered" and record["ended_by"] == "system"
    assert open_calls(gw) == 0


async def test_kill_9_mid_call_is_closed_at_its_last_checkpoint_exactly_once(
    pair: tuple[Path, list[Baresip]],
) -> None:
    tmp_path, phones = pair
    gw = await own_gateway(tmp_path / "gw")
    try:
        await call_between(gw, tmp_path, phones)
        await asyncio.sleep(2.5)  # several checkpoints (every 0.5 s in tests)
        await gw.stop(signal.SIGKILL)
        assert records(gw) == [] and open_calls(gw) == 1
        await gw.start()
        (record,) = records(gw)
        assert open_calls(gw) == 0
        answer, end = datetime.fromisoformat(record["answer"]), datetime.fromisoformat(record["end"])
        lasted = (end - answer).total_seconds()
        print(f"recovered call lasted {lasted:.2f} s up to its last checkpoint")
        assert lasted >= 1.0  # closed at a checkpoint taken during the call, not at answer
        assert record["ended_by"] == "system" and record["packets_in"] > 0
        await gw.stop(signal.SIGKILL)
        await gw.start()  # a second restart finds nothing more to close
        assert len(records(gw)) == 1
    finally:
        await gw.stop()


async def test_kill_9_while_ringing_leaves_a_record_of_the_attempt(pair: tuple[Path, list[Baresip]]) -> None:
    """A call still ringing a second after its INVITE is checkpointed, so a crash keeps the attempt."""
    tmp_path, phones = pair
    gw = await own_gateway(tmp_path / "gw")
    try:
        await ring_between(gw, tmp_path, phones)
        for _ in range(200):
            if open_calls(gw):
                break
            await asyncio.sleep(0.05)
        await gw.stop(signal.SIGKILL)
        assert records(gw) == [] and open_calls(gw) == 1
        await gw.start()
        (record,) = records(gw)
        assert open_calls(gw) == 0
        assert record["answer"] is None and record["disposition"] == "failed" and record["ended_by"] == "system"
    finally:
        await gw.stop()


async def test_max_call_duration_ends_the_call(pair: tuple[Path, list[Baresip]]) -> None:
    tmp_path, phones = pair
    gw = await own_gateway(tmp_path / "gw", extra="max_call_duration_s = 2\n")
    try:
        alice, bob = await call_between(gw, tmp_path, phones)
        await alice.wait_event("CALL_CLOSED", timeout=10)
        await bob.wait_event("CALL_CLOSED")
        await first_record(gw)
    finally:
        await gw.stop()
    (record,) = records(gw)
    lasted = (datetime.fromisoformat(record["end"]) - datetime.fromisoformat(record["answer"])).total_seconds()
    print(f"call limited to 2 s lasted {lasted:.2f} s")
    assert record["ended_by"] == "system" and 1.9 <= lasted


async def test_contacts_that_stop_answering_options_are_dropped(tmp_path: Path) -> None:
    from tests.support.sipp import Sipp

    gw = GatewayProcess(
        tmp_path / "gw",
        sip_extra="keepalive_interval_s = 1",
        extra_config='[[tenants]]\ndomain = "acme"\ndigest_algorithms = ["MD5"]\n',
    )
    gw.write_config()
    gw.add_user("bob@acme", SITES["bob@acme"], PASSWORDS["bob@acme"])
    await gw.start()
    try:
        uas = Sipp(gw.sip_address, tmp_path / "uas", "uas", extra=("-aa",))
        await register_sipp(gw.sip_address, tmp_path / "reg", uas.local_port)
        await uas.start()  # answers the keep-alive OPTIONS
        await asyncio.sleep(3)
        assert (await gw.metrics())["seabridge_registrations"] == 1
        await uas.stop()  # the phone is gone without un-registering
        async with asyncio.timeout(30):
            while (await gw.metrics())["seabridge_registrations"] != 0:
                await asyncio.sleep(0.2)
        assert any(r.get("msg") == "contact dropped: no answer to OPTIONS" for r in gw.log_records())
    finally:
        await gw.stop()


async def test_a_call_nobody_answers_ends_at_the_ring_timeout(pair: tuple[Path, list[Baresip]]) -> None:
    """The ring timer fires through the SIP service's deadline heap."""
    tmp_path, phones = pair
    gw = await own_gateway(tmp_path / "gw", ring_timeout_s=5)
    try:
        alice, bob = await ring_between(gw, tmp_path, phones)
        closed = await alice.wait_event("CALL_CLOSED", timeout=15)
        await bob.wait_event("CALL_CLOSED")
        await first_record(gw)
    finally:
        await gw.stop()
    assert "480" in closed["param"], closed
    (record,) = records(gw)
    rang = (datetime.fromisoformat(record["end"]) - datetime.fromisoformat(record["start"])).total_seconds()
    print(f"unanswered call ended after {rang:.2f} s of ringing")
    assert record["answer"] is None and record["sip_status"] == 480 and 4.9 <= rang
