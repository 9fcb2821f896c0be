"""A browser call relayed through a real TURN server (coturn): [webrtc] ice_servers and relay policy."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path

import pytest_asyncio
from playwright.async_api import BrowserContext

from tests.support.audio import tone_present
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.browser import PhonePage
from tests.support.gateway import GatewayProcess
from tests.support.ports import free_port, port_block
from tests.webrtc.conftest import BROWSER_TONE, PASSWORDS, PHONE_TONE, page_url, start_gateway


@pytest_asyncio.fixture
async def turn(tmp_path: Path) -> AsyncIterator[tuple[int, str, str]]:
    """A private coturn on loopback with a long-term credential made for this test."""
    exe = shutil.which("turnserver")
    assert exe, "coturn is not installed (scripts/test installs it)"
    port, user, password = free_port(), "seabridge", secrets.token_hex(8)
    first, last = port_block(100)
    with (tmp_path / "turnserver.log").open("wb") as log:
        proc = await asyncio.create_subprocess_exec(
            exe, "-n", "--listening-ip=127.0.0.1", "--relay-ip=127.0.0.1", f"--listening-port={port}",
        "--lt-cred-mech", f"--user={user}:{password}", "--realm=seabridge.test", "--no-tls", "--no-dtls",
        f"--min-port={first}", f"--max-port={last}", "--allow-loopback-peers", "--no-cli",
        f"--pidfile={tmp_path / 'turn.pid'}", "--log-file=stdout", "--simple-log",
            stdout=log, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
    try:
        async with asyncio.timeout(10):  # wait for it to listen (TCP too, on the same port)
            while True:
                with contextlib.suppress(OSError):
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                    writer.close()
                    break
                await asyncio.sleep(0.05)
        yield port, user, password
    finally:
        proc.terminate()
        await proc.wait()


async def test_browser_media_relayed_through_turn(
    turn: tuple[int, str, str], browsers: list[BrowserContext], tones: dict[str, Path], tmp_path: Path
) -> None:
    port, user, password = turn
    turn_config = (
        f'ice_transport_policy = "relay"\n'
        f'[[webrtc.ice_servers]]\nurls = ["turn:127.0.0.1:{port}?transport=udp"]\n'
        f'username = "{user}"\ncredential = "{password}"\n'
    )
    gw: GatewayProcess = await start_gateway(tmp_path / "gw", webrtc_extra=turn_config)
    phone = Baresip("bob", tmp_path / "bob", PhoneAccount("bob", "acme", PASSWORDS["bob@acme"], gw.sip_address),
                    tones["phone"])  # fmt: skip
    page = PhonePage(await browsers[0].new_page(), page_url(gw))
    try:
        await phone.start()
        await phone.wait_registered()
        await page.open()
        await page.sign_in("alice@acme", PASSWORDS["alice@acme"])
        await page.dial("bob")
        await phone.wait_event("CALL_INCOMING")
        await phone.accept()
        await page.wait_connected(timeout=30)
        received = await page.record_remote_audio(3.0, tmp_path)
        stats = await page.stats()
        await page.hang_up()
        await phone.wait_event("CALL_CLOSED")
    finally:
        with contextlib.suppress(Exception):
            await page.page.evaluate("localStorage.clear()")
        await page.page.close()
        await phone.stop()
        await gw.stop()
    by_id = {s["id"]: s for s in stats}
    pairs = [
        s for s in stats if s.get("type") == "candidate-pair" and s.get("nominated") and s.get("state") == "succeeded"
    ]
    assert pairs, "no ICE pair succeeded"
    local = by_id[pairs[0]["localCandidateId"]]
    assert local["candidateType"] == "relay", local  # the media went through coturn
    assert tone_present(received, PHONE_TONE)
    assert tone_present(phone.received_audio()[-1], BROWSER_TONE)
