"""Headless Chromium (Debian's, driven by Playwright) running the gateway's browser phone page.

Chromium's fake devices stand in for camera and microphone: the microphone
plays a WAV file we choose (a known tone), the camera a moving test pattern.
The page is driven through its own controls; what it received is read from
``window.seabridge`` (the page's read-only diagnostics) and WebRTC getStats.
"""

from __future__ import annotations

import base64
import io
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import av
from playwright.async_api import BrowserContext, Page, Playwright
from playwright.async_api import Error as PlaywrightError

CHROMIUM = "/usr/bin/chromium"


def chromium_args(fake_audio: Path | None) -> list[str]:
    args = [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--use-fake-device-for-media-stream",
        "--use-fake-ui-for-media-stream",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        "--allow-loopback-in-peer-connection",
        "--autoplay-policy=no-user-gesture-required",
    ]
    if fake_audio is not None:
        args.append(f"--use-file-for-fake-audio-capture={fake_audio}")
    return args


async def launch(
    playwright: Playwright, profile: Path, fake_audio: Path | None, executable: str = CHROMIUM
) -> BrowserContext:
    # bypass_csp: Playwright evaluates its helpers as strings, which the page's CSP forbids.
    return await playwright.chromium.launch_persistent_context(
        str(profile),
        executable_path=executable,
        args=chromium_args(fake_audio),
        ignore_https_errors=True,
        bypass_csp=True,
    )


@dataclass
class PhonePage:
    page: Page
    base_url: str

    async def open(self) -> None:
        # Chromium aborts a navigation when the host's interfaces change under it (tests create
        # and remove network namespaces and veth pairs): that error alone is worth another try.
        for attempt in range(3):
            try:
                await self.page.goto(self.base_url)
                return
            except PlaywrightError as exc:
                if "ERR_NETWORK_CHANGED" not in str(exc) or attempt == 2:
                    raise

    async def sign_in(self, address: str, password: str) -> None:
        await self.page.fill("#login-address", address)
        await self.page.fill("#login-password", password)
        await self.page.click("#login-button")
        await self.page.wait_for_function("window.seabridge && window.seabridge.registered", timeout=15000)

    async def dial(self, target: str, video: bool = False) -> None:
        await self.page.fill("#target", target)
        await self.page.click("#call-video" if video else "#call-audio")

    async def wait_connected(self, timeout: float = 20) -> None:
        await self.page.wait_for_function(
            "window.seabridge.call && window.seabridge.call.startedAt > 0", timeout=timeout * 1000
        )

    async def wait_ringing(self, timeout: float = 20) -> dict[str, Any]:
        await self.page.wait_for_selector("#incoming:not([hidden])", timeout=timeout * 1000)
        return dict(await self.page.evaluate("window.seabridge.ringing"))

    async def answer(self, video: bool = False) -> None:
        await self.page.click("#answer-video" if video else "#answer-audio")

    async def hang_up(self) -> None:
        await self.page.click("#hangup")

    async def wait_ended(self, timeout: float = 20) -> dict[str, Any]:
        await self.page.wait_for_function(
            "window.seabridge.lastEnded !== null && window.seabridge.call === null", timeout=timeout * 1000
        )
        return dict(await self.page.evaluate("window.seabridge.lastEnded"))

    async def press(self, key: str) -> None:
        if await self.page.is_hidden("#call-pad"):
            await self.page.click("#keypad")
        await self.page.click(f"#call-pad button[data-key='{key}']")

    async def events(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("window.seabridge.events"))

    async def stats(self) -> list[dict[str, Any]]:
        return list(await self.page.evaluate("window.seabridge.stats()"))

    async def stat(self, kind: str, media: str) -> dict[str, Any]:
        for entry in await self.stats():
            if entry.get("type") == kind and entry.get("kind") == media:
                return entry
        return {}

    async def record_remote_audio(self, seconds: float, folder: Path) -> Path:
        """Record what the page receives (MediaRecorder, Opus in WebM) and return it as an 8 kHz WAV."""
        encoded = await self.page.evaluate(
            """async (ms) => {
                const call = window.seabridge.call;
                const stream = new MediaStream(call.remote.getAudioTracks());
                const recorder = new MediaRecorder(stream, {mimeType: 'audio/webm;codecs=opus'});
                const chunks = [];
                recorder.ondataavailable = (e) => chunks.push(e.data);
                const stopped = new Promise((r) => { recorder.onstop = r; });
                recorder.start(250);
                await new Promise((r) => setTimeout(r, ms));
                recorder.stop();
                await stopped;
                const buffer = await new Blob(chunks).arrayBuffer();
                let binary = '';
                const bytes = new Uint8Array(buffer);
                for (let i = 0; i < bytes.length; i += 1) binary += String.fromCharCode(bytes[i]);
                return btoa(binary);
            }""",
            int(seconds * 1000),
        )
        return webm_to_wav(base64.b64decode(encoded), folder / f"browser-received-{id(self)}.wav")


def webm_to_wav(data: bytes, path: Path, rate: int = 8000) -> Path:
    container = av.open(io.BytesIO(data))
    resampler = av.AudioResampler(format="s16", layout="mono", rate=rate)
    pcm = bytearray()
    for frame in container.decode(audio=0):
        for out in resampler.resample(frame):
            pcm += bytes(out.planes[0])[: out.samples * 2]
    container.close()
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(rate)
        w.writeframes(bytes(pcm))
    return path
