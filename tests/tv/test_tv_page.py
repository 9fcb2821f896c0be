"""The browser TV page in headless Chromium (Playwright): list, guide, and playback."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, async_playwright
from tv_gateway import Gateway, channel

from media.tv.web import WEB_DIR, hls_player_available

pytestmark = pytest.mark.peers

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream", "--disable-background-networking", "--disable-component-update",
    "--disable-sync", "--no-first-run",
]  # fmt: skip


@pytest.fixture(scope="session")
def hls_js() -> None:
    """The page's player library, installed from npm the way scripts/install does it."""
    if not hls_player_available():
        subprocess.run(["bash", str(WEB_DIR / "build.sh")], check=True, timeout=300)
    assert hls_player_available()


@pytest.fixture
async def browser(tmp_path: Path) -> AsyncIterator[BrowserContext]:
    async with async_playwright() as p:
        context = await p.chromium.launch_persistent_context(
            str(tmp_path / "profile"), executable_path="/usr/bin/chromium", args=CHROMIUM_FLAGS, headless=True
        )
        try:
            yield context
        finally:
            await context.close()


@pytest.mark.parametrize("player", ["hls.js", "native"])
async def test_tv_page_plays_a_channel(
    hls_js: None,
    gateway: Callable[..., Awaitable[Gateway]],
    hls_origin: Any,
    browser: BrowserContext,
    tmp_path: Path,
    player: str,
) -> None:
    guide = tmp_path / "guide.xml"
    guide.write_text(
        '<tv><channel id="t.cn"><display-name>T</display-name></channel>'
        '<programme start="20000101000000 +0000" stop="20991231000000 +0000" channel="t.cn">'
        "<title>Evening news</title></programme>"
        '<programme start="20991231000000 +0000" stop="21000101000000 +0000" channel="t.cn">'
        "<title>Weather</title></programme></tv>"
    )
    gw = await gateway([channel(9, hls_origin.url, epg_id="t.cn", group="News")], epg_source=str(guide))
    token = gw.token()
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    query = "?player=native" if player == "native" else ""
    await page.goto(gw.url(token, query))
    button = page.locator("button[data-number='9']")
    await button.wait_for(timeout=15000)
    assert "Evening news" in await button.inner_text()
    await button.click()
    await page.wait_for_function("document.getElementById('video').currentTime > 3", timeout=60000, polling=250)
    assert await page.evaluate("window.tvState.player") == player
    assert await page.locator("#now").inner_text() != "\u2013"
    assert "Weather" in await page.locator("#next").inner_text()
    playing = await page.evaluate(
        "[document.getElementById('video').videoWidth, document.getElementById('video').paused]"
    )
    assert playing == [320, False]
    assert errors == []
