"""Issue 3 in-call features through the gateway: hold/resume (re-INVITE), RFC 4733 DTMF."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from tests.integration.conftest import PASSWORDS, PhoneFactory
from tests.support.audio import tone_fraction
from tests.support.baresip import Baresip
from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp


async def rtp_received(phone: Baresip) -> int:
    """Packets the phone has received from the far end (its RTCP member table)."""
    data = (await phone.command("audio_debug"))["data"]
    m = re.search(r"rcvd=(\d+)", data)
    return int(m.group(1)) if m else 0


async def rtp_settled(phone: Baresip, flowing: bool, timeout: float = 10.0) -> int:
    """The phone's received-packet count once the far end has stopped (or started) sending.

    A re-INVITE takes effect after its round trip, which a loaded machine stretches: wait
    for the effect rather than guess how long it takes.
    """
    async with asyncio.timeout(timeout):
        before = await rtp_received(phone)
        while True:
            await asyncio.sleep(0.3)  # the counter is read, not pushed: poll it
            now = await rtp_received(phone)
            if (now - before > 5) == flowing:
                return now
            before = now


async def test_hold_stops_the_tone_and_resume_brings_it_back(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    alice = await phone("alice@acme", tone=1000)
    bob = await phone("bob@acme", tone=1500)
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(2.5)
    at_hold = await rtp_received(bob)
    await bob.command("hold")  # re-INVITE a=sendonly from bob, relayed to alice, who answers recvonly
    hold_start = await rtp_settled(bob, flowing=False)
    await asyncio.sleep(2.5)
    hold_end = await rtp_received(bob)
    await bob.command("resume")
    resumed = await rtp_settled(bob, flowing=True)
    await asyncio.sleep(2.5)
    later = await rtp_received(bob)
    await alice.hangup()
    await bob.wait_event("CALL_CLOSED")
    await alice.wait_event("CALL_CLOSED")
    print(f"packets bob received: {at_hold} before hold, +{hold_end - hold_start} on hold, +{later - resumed} resumed")
    # The tone before the hold, decoded and recorded by bob's phone. baresip 1.0 drops its
    # recorder from the receive pipeline when a re-INVITE rebuilds it, so after the hold
    # the phone's own packet counters show the audio stopping and returning.
    (heard_by_bob,) = bob.received_audio()
    assert tone_fraction(heard_by_bob, 1000, 0.5, 2.0) > 0.8
    assert at_hold > 100  # ~50 packets/s
    assert hold_end - hold_start <= 5  # alice stopped sending while held
    assert later - resumed > 100  # and sends again after resume


async def test_rfc4733_digits_cross_the_gateway(gateway: GatewayProcess, phone: PhoneFactory) -> None:
    alice = await phone("alice@acme")
    bob = await phone("bob@acme")
    await alice.dial("sip:bob@acme")
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    await alice.wait_event("CALL_ESTABLISHED")
    await asyncio.sleep(0.5)
    for digit in "159#":
        mark = len(bob.events)
        await alice.command("sndcode", digit)
        event = await bob.wait_event("CALL_DTMF_START", after=mark)
        assert event["param"] == digit, event
    await alice.hangup()
    await bob.wait_event("CALL_CLOSED")


async def test_sip_info_digits_reach_an_rfc4733_phone(
    gateway: GatewayProcess, phone: PhoneFactory, tmp_path: Path
) -> None:
    bob = await phone("bob@acme")
    caller = Sipp(
        gateway.sip_address,
        tmp_path / "uac",
        "uac_info.xml",
        keys={"user": "alice", "domain": "acme", "password": PASSWORDS["alice@acme"], "callee": "bob",
              "hold": "1000", "digit": "7"},
    )  # fmt: skip
    await caller.start()
    await bob.wait_event("CALL_INCOMING")
    await bob.accept()
    event = await bob.wait_event("CALL_DTMF_START")
    assert event["param"] == "7", event
    result = await caller.wait()
    assert result.ok, result.output[-2000:]
