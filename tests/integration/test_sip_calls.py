"""Issue 2 end to end: real phones (baresip, sipp) register to and call through a real gateway."""

from __future__ import annotations

import asyncio
import re
import socket
import sqlite3
from pathlib import Path

from tests.integration.conftest import PASSWORDS, PhoneFactory, register_sipp, sipp_calls
from tests.support.audio import tone_present
from tests.support.baresip import Baresip
from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp


def call_records(gw: GatewayProcess) -> list[sqlite3.Row]:
    with sqlite3.connect(gw.data_dir / "gateway.db") as db:
        db.row_factory = sqlite3.Row
        return list(db.execute("SELECT * FROM call_records ORDER BY start"))


async def wait_for_record(gw: GatewayProcess, count: int, timeout: float = 10) -> list[sqlite3.Row]:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while loop.time() < deadline:
        rows = call_records(gw)
        if len(rows) >= count:
            return rows
        await asyncio.sleep(0.05)
    raise AssertionError(f"expected {count} call records, have {len(call_records(gw))}")


async def remote_media(phone: Baresip) -> tuple[str, int]:
    """The RTP address the phone was told to send to (from the SDP it received)."""
    out = await phone.command("audio_debug")
    m = re.search(r"remote: ([0-9.]+):(\d+)", out["data"])
    assert m, out["data"]
    return m.group(1), int(m.group(2))


# --- registration -------------------------------------------------------------------------


async def test_register_wrong_then_right_password(gateway: GatewayProcess, tmp_path: Path) -> None:
    result = await Sipp(
        gateway.sip_address,
        tmp_path,
        "register_wrong_then_right.xml",
        keys={"user": "alice", "domain": "acme", "password": PASSWORDS["alice@acme"], "wrong_password": "guess-123"},
    ).run()
    assert result.ok, result.output + result.messages


async def test_unknown_user_gets_the_same_challenge_as_a_known_one(gateway: GatewayProcess, tmp_path: Path) -> None:
    unknown = await Sipp(
        gateway.sip_address,
        tmp_path,
        "register.xml",
        keys={"user": "nobody", "domain": "initech", "password": "whatever-1", "expires": "300", "expected": "401"},
    ).run()
    assert unknown.ok, unknown.output + unknown.messages
    wrong = await Sipp(
        gateway.sip_address,
        tmp_path,
        "register.xml",
        keys={"user": "erin", "domain": "initech", "password": "whatever-1", "expires": "300", "expected": "401"},
    ).run()
    assert wrong.ok, wrong.output + wrong.messages

    def challenges(log: str) -> list[str]:
        shapes = []
        for line in log.splitlines():
            if line.startswith("WWW-Authenticate:"):
                shapes.append(re.sub(r'(nonce|opaque)="[^"]*"', r'\1="*"', line.strip()))
        return shapes

    assert challenges(unknown.messages) == challenges(wrong.messages)
    assert {c.split("algorithm=")[1].split(",")[0] for c in challenges(unknown.messages)} == {"MD5", "SHA-256"}


# --- calls ---------------------------------------------------------------------------------


async def test_call_audio_crosses_the_relay_both_ways(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    before = len(call_records(gateway))
    alice = await phone("alice@acme", tone=1000)
    bob = await phone("bob@acme", tone=1500)
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await bob.wait_event("CALL_ESTABLISHED")
    first, last = gateway.media_range
    for p in (alice, bob):
        host, port = await remote_media(p)
        assert host == "127.0.0.1" and first <= port <= last, (p.name, host, port)
    await asyncio.sleep(3)  # let three seconds of audio flow
    await alice.hangup()
    await bob.wait_event("CALL_CLOSED")
    rows = await wait_for_record(gateway, before + 1)
    await alice.wait_event("CALL_CLOSED")
    (heard_by_bob,) = bob.received_audio()
    (heard_by_alice,) = alice.received_audio()
    assert tone_present(heard_by_bob, 1000) and not tone_present(heard_by_bob, 1500)
    assert tone_present(heard_by_alice, 1500) and not tone_present(heard_by_alice, 1000)
    record = rows[-1]
    assert record["disposition"] == "answered" and record["ended_by"] == "caller"
    assert record["caller"] == "alice@acme" and record["callee"] == "bob@acme"
    assert record["tenant"] == "acme" and record["site"] == "kinshasa" and record["codec"] == "PCMU"
    assert record["packets_in"] > 100 and record["packets_out"] > 100  # ~50 packets/s each way
    assert len(record["session_id"]) == 32 and record["answer"] is not None


async def test_cancel_before_answer(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    before = len(call_records(gateway))
    alice = await phone("alice@acme")
    bob = await phone("bob@acme")
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await alice.hangup()  # before bob answers: baresip sends CANCEL
    await bob.wait_event("CALL_CLOSED")
    rows = await wait_for_record(gateway, before + 1)
    assert rows[-1]["disposition"] == "cancelled" and rows[-1]["sip_status"] == 487
    assert rows[-1]["answer"] is None


async def test_bye_from_the_callee(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    before = len(call_records(gateway))
    alice = await phone("alice@acme")
    bob = await phone("bob@acme")
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await bob.hangup()
    await alice.wait_event("CALL_CLOSED")
    rows = await wait_for_record(gateway, before + 1)
    assert rows[-1]["disposition"] == "answered" and rows[-1]["ended_by"] == "callee"


async def test_a_callee_on_two_phones_rings_both_and_the_first_to_answer_wins(
    gateway: GatewayProcess, phone: PhoneFactory
) -> None:
    alice = await phone("alice@acme")
    desk = await phone("carol@acme", tone=1500)
    mobile = await phone("carol@acme", tone=2000)
    await alice.dial("sip:carol@acme")
    await desk.wait_event("CALL_INCOMING")
    await mobile.wait_event("CALL_INCOMING")
    await mobile.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await desk.wait_event("CALL_CLOSED")  # cancelled when the mobile answered
    await asyncio.sleep(2)
    await alice.hangup()
    await mobile.wait_event("CALL_CLOSED")
    await alice.wait_event("CALL_CLOSED")
    (heard,) = alice.received_audio()
    assert tone_present(heard, 2000) and not tone_present(heard, 1500)
    assert desk.count("CALL_ESTABLISHED") == 0


async def test_unregistered_user_gets_480_and_unknown_user_404(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    alice = await phone("alice@acme")
    await alice.dial("sip:bob@acme")  # bob exists but no phone of his is registered
    closed = await alice.wait_event("CALL_CLOSED")
    assert "480" in closed["param"], closed
    mark = len(alice.events)
    await alice.dial("sip:zelda@acme")
    closed = await alice.wait_event("CALL_CLOSED", after=mark)
    assert "404" in closed["param"], closed


async def test_cross_tenant_call_is_refused(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    alice = await phone("alice@acme")
    dave = await phone("dave@globex")
    await alice.dial("sip:dave@globex")
    closed = await alice.wait_event("CALL_CLOSED")
    assert "403" in closed["param"], closed
    await asyncio.sleep(0.5)
    assert dave.count("CALL_INCOMING") == 0


async def test_malformed_sip_gets_400_and_the_gateway_keeps_working(gateway: GatewayProcess, tmp_path: Path) -> None:
    bad = (
        b"OPTIONS sip:acme SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:9;branch=z9hG4bKbad;rport\r\n"
        b"From: <sip:x@acme>;tag=1\r\nTo: <sip:acme>\r\nCall-ID: bad1\r\nCSeq: 1 OPTIONS\r\n"
        b"Content-Length: 999\r\n\r\n"
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        s.settimeout(5)
        s.sendto(bad, gateway.sip_address)
        answer, _ = s.recvfrom(65535)
        assert answer.startswith(b"SIP/2.0 400 ")
        s.sendto(b"\x00\xff garbage", gateway.sip_address)
        s.sendto(bad.replace(b"999", b"0").replace(b"bad1", b"good1"), gateway.sip_address)
        answer, _ = s.recvfrom(65535)
        assert answer.startswith(b"SIP/2.0 200 ")
    metrics = await gateway.metrics()
    assert metrics["seabridge_sip_parse_errors_total"] >= 2


async def test_two_hundred_calls_leave_nothing_behind(gateway: GatewayProcess, tmp_path: Path) -> None:
    # bob answers on a sipp UAS registered to the gateway; alice calls 100 times with sipp,
    # then 100 times more.
    uas_port = Sipp(gateway.sip_address, tmp_path, "uas").local_port
    await register_sipp(gateway.sip_address, tmp_path / "reg", uas_port)
    await asyncio.sleep(0.5)
    baseline = await gateway.metrics()
    before = len(call_records(gateway))
    fds: list[float] = []
    for batch in ("first", "second"):
        # sipp's UAS counts the gateway's keep-alive OPTIONS as calls (and answers them): room for a few.
        uas = Sipp(
            gateway.sip_address, tmp_path / f"uas-{batch}", "uas", local_port=uas_port, calls=104, extra=("-aa",)
        )
        await uas.start()
        try:
            uac = await sipp_calls(
                gateway.sip_address, tmp_path / f"uac-{batch}", calls=100, rate=25, extra=("-l", "20"), timeout=180
            )
            assert uac.ok, uac.output[-3000:]
        finally:
            await uas.stop()
        before += 100
        await wait_for_record(gateway, before, timeout=30)
        fds.append((await gateway.metrics())["seabridge_open_fds"])
    rows = call_records(gateway)
    assert sum(1 for r in rows[before - 200 :] if r["disposition"] == "answered") == 200
    # Transactions linger for their timers (Timer K/J, 32 s at most with T1 = 500 ms).
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 45
    while loop.time() < deadline:
        after = await gateway.metrics()
        if after["seabridge_sip_transactions"] == 0 and after["seabridge_calls_in_progress"] == 0:
            break
        await asyncio.sleep(1)
    assert after["seabridge_calls_in_progress"] == 0
    assert after["seabridge_sip_transactions"] == 0
    # The in-process relay keeps its sockets bound between sessions, one per port of its range:
    # the first hundred calls (two port pairs each) went through the whole range, so the next
    # hundred open nothing more; nothing else may stay open either.
    first, last = gateway.media_range
    assert (last - first + 1) // 2 <= 100 * 2
    assert fds[1] <= fds[0] and after["seabridge_open_fds"] <= fds[0]
    assert after["seabridge_asyncio_tasks"] <= baseline["seabridge_asyncio_tasks"]
