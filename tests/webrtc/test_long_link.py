"""A browser call over an emulated geostationary satellite link: 300 ms each way, 600 ms round trip.

Chromium runs in its own network namespace, joined to the gateway's host
through a userspace bridge that holds every frame for 300 ms (no netem in
this kernel). ICE, DTLS, the page and its WebSocket all cross the link; the
gateway's STUN retransmission timer is set above the round trip from
``[webrtc]``. The browser's own statistics must show the long round trip.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from playwright.async_api import Playwright

from tests.support.audio import tone_present
from tests.support.baresip import Baresip, PhoneAccount
from tests.support.browser import PhonePage, launch
from tests.support.gateway import GatewayProcess
from tests.support.netns import LongLink
from tests.webrtc.conftest import BROWSER_TONE, PASSWORDS, page_url, start_gateway

SATELLITE = """
ice_retry_rto_ms = 1000
connect_timeout_s = 60
"""


@pytest_asyncio.fixture
async def link() -> AsyncIterator[LongLink]:
    satellite = LongLink(delay=0.3).open()
    try:
        yield satellite
    finally:
        satellite.close()


@pytest_asyncio.fixture
async def far_gateway(link: LongLink, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[GatewayProcess]:
    gw = await start_gateway(tmp_path_factory.mktemp("long-link-gateway"), SATELLITE, address=link.host_address)
    try:
        yield gw
    finally:
        await gw.stop()


async def test_a_call_over_a_600_ms_link_shows_the_round_trip_in_the_browser(
    link: LongLink,
    far_gateway: GatewayProcess,
    playwright: Playwright,
    tones: dict[str, Path],
    tmp_path: Path,
) -> None:
    phone = Baresip(
        "bob-far",
        tmp_path / "bob",
        PhoneAccount("bob", "acme", PASSWORDS["bob@acme"], far_gateway.sip_address),
        tones["phone"],
    )
    context = await launch(
        playwright, tmp_path / "profile", tones["browser"], executable=str(link.wrapper(tmp_path, "/usr/bin/chromium"))
    )
    try:
        await phone.start()
        await phone.wait_registered()
        page = PhonePage(await context.new_page(), page_url(far_gateway))
        started = time.monotonic()
        await page.open()
        await page.sign_in("alice@acme", PASSWORDS["alice@acme"])
        print(f"page loaded and signed in over the link in {time.monotonic() - started:.1f}s")
        started = time.monotonic()
        await page.dial("bob")
        await phone.wait_event("CALL_INCOMING", timeout=30)
        await phone.accept()
        await page.wait_connected(timeout=60)
        print(f"call set up (ICE and DTLS over the link) in {time.monotonic() - started:.1f}s")

        async def round_trips() -> tuple[float, float] | None:
            media = pair = None
            for entry in await page.stats():
                if entry.get("type") == "remote-inbound-rtp" and entry.get("kind") == "audio":
                    media = entry.get("roundTripTime")
                elif entry.get("type") == "candidate-pair" and entry.get("nominated"):
                    pair = entry.get("currentRoundTripTime")
            return (media, pair) if media and pair else None

        loop = asyncio.get_running_loop()
        deadline = loop.time() + 30
        measured = None
        while measured is None and loop.time() < deadline:
            measured = await round_trips()
            await asyncio.sleep(0.5)
        assert measured is not None, "the browser reported no round trip"
        media_rtt, ice_rtt = measured
        print(f"browser getStats: media round trip {media_rtt * 1000:.0f} ms, ICE round trip {ice_rtt * 1000:.0f} ms")
        assert media_rtt >= 0.6 and ice_rtt >= 0.6
        await page.hang_up()
        await phone.wait_event("CALL_CLOSED", timeout=30)
        recordings = phone.received_audio()
        assert recordings and tone_present(recordings[-1], BROWSER_TONE), "no browser audio crossed the link"
    finally:
        await context.close()
        await phone.stop()
