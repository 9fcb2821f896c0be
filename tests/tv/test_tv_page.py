"""The browser TV page in headless Chromium (Playwright): list, guide, and playback."""

from __future__ import annotations

import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import BrowserContext, async_playwright
from tv_gateway import FAST, Gateway, channel
from tv_peers import clock_from_bars, wait_until

from media.tv.web import WEB_DIR, hls_player_available

pytestmark = pytest.mark.peers

SEG = FAST["max_segment_s"]

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


# The picture on screen, as the clock channel's bars read (see tv_peers.ffmpeg_clock_args).
READ_BARS = """() => {
  const v = document.getElementById('video');
  const c = document.createElement('canvas');
  c.width = v.videoWidth; c.height = v.videoHeight;
  const ctx = c.getContext('2d');
  ctx.drawImage(v, 0, 0);
  const row = ctx.getImageData(0, 12, c.width, 1).data;
  const bar = Math.floor(c.width / 32), out = [];
  for (let i = 0; i < 32; i++) {
    const x = i * bar + (bar >> 1);
    out.push(0.299 * row[4 * x] + 0.587 * row[4 * x + 1] + 0.114 * row[4 * x + 2]);
  }
  return out;
}"""


async def test_pause_and_resume_live_tv_and_watch_a_programme_from_its_start(
    hls_js: None,
    gateway: Callable[..., Awaitable[Gateway]],
    clock_channel: str,
    browser: BrowserContext,
    tmp_path: Path,
) -> None:
    t0 = int(time.time())
    guide = tmp_path / "guide.xml"
    guide.write_text(
        '<tv><channel id="clock.cn"><display-name>Clock</display-name></channel>'
        f'<programme start="{_xmltv(t0 + 4)}" stop="{_xmltv(t0 + 9)}" channel="clock.cn"><title>Evening news</title></programme>'
        f'<programme start="{_xmltv(t0 + 9)}" stop="{_xmltv(t0 + 9000)}" channel="clock.cn"><title>Drama</title></programme>'
        "</tv>"
    )
    gw = await gateway(
        [channel(1, clock_channel, record=True, epg_id="clock.cn")],
        dvr={"window_hours": 0.05, "timeshift_hours": [], "min_free_mb": 0},
        epg_source=str(guide),
    )
    token = gw.token()
    page = await browser.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    await page.goto(gw.url(token))

    async def shown() -> float:
        return clock_from_bars(await page.evaluate(READ_BARS), time.time())

    await page.locator("button[data-number='1']").click()
    await page.wait_for_function("document.getElementById('video').currentTime > 2", timeout=60000, polling=250)
    assert await page.locator("#dvr").is_visible()
    assert await page.locator("#mode").inner_text() == "live"

    # Pause live TV for a while, then resume: it goes on from the paused picture, behind live.
    recorder = gw.service.recorders[1]
    await wait_until(lambda: (recorder.window.end or 0) - (recorder.window.start or 0) > 8, 30, "8 s recorded")
    await page.evaluate("document.getElementById('video').pause()")
    paused_at = time.time()
    paused_picture = await shown()
    await page.wait_for_timeout(6000)  # the viewer is away for six seconds
    await page.evaluate("document.getElementById('video').play()")
    await page.wait_for_function("window.tvState.resumes === 1 && window.tvState.mode === 'shift'", timeout=10000)
    away = time.time() - paused_at
    await page.wait_for_function(
        "!window.tvState.switching && !document.getElementById('video').paused", timeout=30000, polling=100
    )
    resumed_picture = await shown()
    shift = await page.evaluate("window.tvState.shift")
    print(
        f"\npaused {away:.1f} s at {paused_picture - paused_at:+.2f} s from live; resumed {shift} s behind, "
        f"showing {resumed_picture - paused_picture:+.2f} s from the paused picture"
    )
    assert abs(shift - away) <= 1.5
    assert abs(resumed_picture - paused_picture) <= 2 * SEG + 0.5
    assert time.time() - resumed_picture >= shift - 0.5  # really behind live now
    assert (await page.locator("#mode").inner_text()).startswith(f"+{shift}s")

    # The guide's programme that is recorded plays from its start.
    await wait_until(lambda: (recorder.window.end or 0) > t0 + 10, 30, "the news recorded")
    await page.evaluate("window.tvReload()")
    news = page.locator("#catchup button", has_text="Evening news")
    await news.click()
    await page.wait_for_function(
        "window.tvState.mode === 'catchup' && !window.tvState.switching && !document.getElementById('video').paused",
        timeout=30000,
        polling=100,
    )
    start_picture = await shown()
    print(f"catch-up starts at {start_picture - (t0 + 4):+.2f} s from the programme's start")
    assert t0 + 4 - SEG - 1.0 <= start_picture <= t0 + 4 + 1.0
    assert await page.locator("#catchup button", has_text="Drama").count() == 1
    assert errors == []


def _xmltv(epoch: float) -> str:
    return time.strftime("%Y%m%d%H%M%S +0000", time.gmtime(epoch))
