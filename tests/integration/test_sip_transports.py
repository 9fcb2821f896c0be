"""Issue 3 transports: TCP and TLS phones, calls across transports, sipp over TCP."""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.integration.conftest import PASSWORDS, PhoneFactory
from tests.integration.test_sip_calls import call_records, wait_for_record
from tests.support.audio import tone_present
from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp


async def test_tls_phone_calls_tcp_phone_audio_both_ways(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    before = len(call_records(gateway))
    alice = await phone("alice@acme", tone=1000, transport="tls")
    bob = await phone("bob@acme", tone=1500, transport="tcp")
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(2)
    await bob.hangup()  # BYE from the TCP side, relayed to the TLS side
    await alice.wait_event("CALL_CLOSED")
    rows = await wait_for_record(gateway, before + 1)
    assert rows[-1]["disposition"] == "answered" and rows[-1]["ended_by"] == "callee"
    (heard_by_bob,) = bob.received_audio()
    (heard_by_alice,) = alice.received_audio()
    assert tone_present(heard_by_bob, 1000) and tone_present(heard_by_alice, 1500)
    health = await gateway.wait_healthy()
    assert health["sip"]["connections"] >= 2  # both phones' connections are kept for reuse


async def test_udp_phone_calls_tls_phone(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    alice = await phone("alice@acme", tone=1000)
    carol = await phone("carol@acme", tone=1500, transport="tls")
    await alice.dial("sip:carol@acme")
    await carol.wait_event("CALL_INCOMING")  # reached over the connection carol registered on
    await carol.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await alice.hangup()
    await carol.wait_event("CALL_CLOSED")


async def test_sipp_over_tcp_registers_and_calls(gateway: GatewayProcess, tmp_path: Path) -> None:
    # Room for the gateway's keep-alive OPTIONS, which sipp's UAS counts as calls.
    uas = Sipp(gateway.sip_address, tmp_path / "uas", "uas", calls=5, extra=("-t", "t1", "-aa"))
    reg = await Sipp(
        gateway.sip_address,
        tmp_path / "reg",
        "register.xml",
        local_port=uas.local_port,
        keys={
            "user": "carol",
            "domain": "acme",
            "password": PASSWORDS["carol@acme"],
            "expires": "600",
            "expected": "200",
        },
        extra=("-t", "t1"),
    ).run()
    assert reg.ok, reg.output[-2000:]
    await uas.start()
    try:
        uac = await Sipp(
            gateway.sip_address,
            tmp_path / "uac",
            "uac_auth.xml",
            calls=3,
            rate=3,
            keys={
                "user": "alice",
                "domain": "acme",
                "password": PASSWORDS["alice@acme"],
                "callee": "carol",
                "hold": "200",
            },
            extra=("-t", "t1"),
        ).run()
        assert uac.ok, uac.output[-3000:]
    finally:
        await uas.stop()
