"""Sign-in, session tokens and the WebSocket's authentication, against the real gateway (no browser needed)."""

from __future__ import annotations

import json
import re
import time
import tomllib
from importlib import resources
from typing import Any

import aiohttp
import pytest

from gateway.webrtc.tokens import TokenIssuer
from tests.support.gateway import GatewayProcess
from tests.webrtc.conftest import PASSWORDS, page_url


async def sign_in(gw: GatewayProcess, address: str, password: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as http:
        body = {"address": address, "password": password}
        async with http.post(page_url(gw) + "api/session", json=body, ssl=False) as r:
            return r.status, await r.json()


async def open_socket(gw: GatewayProcess, token: str) -> tuple[list[dict[str, Any]], int | None]:
    """Authenticate with ``token``; the messages received until the gateway closes or says ready."""
    messages: list[dict[str, Any]] = []
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(page_url(gw).replace("https", "wss") + "ws", ssl=False) as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
            async for message in ws:
                if message.type != aiohttp.WSMsgType.TEXT:
                    break
                messages.append(json.loads(message.data))
                if messages[-1]["type"] == "registered":
                    break  # a refused socket is closed by the gateway instead
            return messages, ws.close_code


def secret_of(gw: GatewayProcess) -> bytes:
    values = tomllib.loads((gw.data_dir / "secrets.toml").read_text())
    return bytes.fromhex(values["webrtc_token_secret"])


async def test_sign_in_with_the_sip_password_gives_a_working_token(gateway: GatewayProcess) -> None:
    status, body = await sign_in(gateway, "alice@acme", PASSWORDS["alice@acme"])
    assert status == 200 and body["user"] == "alice@acme" and body["expires"] > time.time()
    messages, _code = await open_socket(gateway, body["token"])
    assert [m["type"] for m in messages] == ["ready", "registered"]
    assert messages[0]["user"] == "alice@acme" and messages[1]["ok"] is True


@pytest.mark.parametrize(
    ("address", "password"),
    [("alice@acme", "wrong-password"), ("nobody@acme", "whatever-123"), ("alice@globex", PASSWORDS["alice@acme"])],
)
async def test_wrong_credentials_are_refused_alike(gateway: GatewayProcess, address: str, password: str) -> None:
    status, body = await sign_in(gateway, address, password)
    assert (status, body) == (401, {"error": "bad_credentials"})


async def test_a_forged_token_is_refused(gateway: GatewayProcess) -> None:
    forged, _claims = TokenIssuer(b"not-the-gateway-secret-0123456789", 3600).issue("alice", "acme", time.time())
    for token in (forged, "v1.garbage.garbage", "nonsense"):
        messages, code = await open_socket(gateway, token)
        assert messages == [{"type": "error", "code": "unauthorized", "message": "sign in again"}]
        assert code == 4401


async def test_an_expired_token_is_refused(gateway: GatewayProcess) -> None:
    issuer = TokenIssuer(secret_of(gateway), 60)
    expired, _claims = issuer.issue("alice", "acme", time.time() - 3600)
    messages, code = await open_socket(gateway, expired)
    assert messages[0]["code"] == "unauthorized" and code == 4401
    # The same secret with a fresh issue time works: the refusal was the expiry.
    fresh, _claims = issuer.issue("alice", "acme", time.time())
    messages, _code = await open_socket(gateway, fresh)
    assert messages[0]["type"] == "ready"


async def test_an_open_socket_is_closed_when_its_token_expires(gateway: GatewayProcess) -> None:
    token, _claims = TokenIssuer(secret_of(gateway), 2).issue("alice", "acme", time.time())
    async with aiohttp.ClientSession() as http:
        async with http.ws_connect(page_url(gateway).replace("https", "wss") + "ws", ssl=False) as ws:
            await ws.send_str(json.dumps({"type": "auth", "token": token}))
            seen = []
            async for message in ws:
                if message.type == aiohttp.WSMsgType.TEXT:
                    seen.append(json.loads(message.data)["type"])
            assert seen[0] == "ready" and ws.close_code == 4401


async def test_recent_calls_need_a_token(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(page_url(gateway) + "api/phone/calls", ssl=False) as r:
            assert r.status == 401
        _status, body = await sign_in(gateway, "carol@acme", PASSWORDS["carol@acme"])
        headers = {"Authorization": f"Bearer {body['token']}"}
        async with http.get(page_url(gateway) + "api/phone/calls", headers=headers, ssl=False) as r:
            assert r.status == 200
            assert isinstance((await r.json())["calls"], list)


async def test_the_page_is_served_over_https_with_no_outside_resources(gateway: GatewayProcess) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(page_url(gateway), ssl=False) as r:
            assert r.status == 200 and r.url.scheme == "https"
            assert "script-src 'self'" in r.headers["Content-Security-Policy"]
            html = await r.text()
        for asset in re.findall(r'(?:src|href)="(/static/[^"]+)"', html):
            async with http.get(page_url(gateway) + asset.lstrip("/"), ssl=False) as r:
                assert r.status == 200, asset
        async with http.get(page_url(gateway) + "static/..%2Fservice.py", ssl=False) as r:
            assert r.status == 404
    static = resources.files("gateway.webrtc") / "static"
    for item in static.iterdir():
        text = item.read_text()
        # No CDN, fonts or analytics: a site without internet gets the whole page from the gateway.
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), item.name
