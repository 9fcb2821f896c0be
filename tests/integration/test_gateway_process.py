"""`seabridge run` as an operator meets it: first start, secrets, health and metrics."""

from __future__ import annotations

import stat
from pathlib import Path

import aiohttp

from tests.support.gateway import GatewayProcess


async def test_first_start_generates_secrets_and_says_where(tmp_path: Path) -> None:
    gw = GatewayProcess(tmp_path / "gw")
    await gw.start()
    try:
        secrets = gw.data_dir / "secrets.toml"
        assert secrets.exists() and stat.S_IMODE(secrets.stat().st_mode) == 0o600
        generated = [r for r in gw.log_records() if r.get("msg") == "generated new secrets"]
        assert generated and generated[0]["path"] == str(secrets.resolve())
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{gw.http_port}/health") as resp:
                health = await resp.json()
        assert health["status"] == "ok" and health["sip"]["udp_port"] == gw.sip_port
        metrics = await gw.metrics()
        for name in (
            "seabridge_registrations",
            "seabridge_calls_in_progress",
            "seabridge_rtp_packets_relayed_total",
            "seabridge_sip_parse_errors_total",
        ):
            assert name in metrics, name
    finally:
        assert await gw.stop() == 0
    content = secrets.read_text()
    await gw.start()  # a second start reuses the secrets
    try:
        assert secrets.read_text() == content
        assert sum(1 for r in gw.log_records() if r.get("msg") == "generated new secrets") == 1
    finally:
        await gw.stop()


async def test_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    first = GatewayProcess(tmp_path / "one")
    await first.start()
    try:
        second = GatewayProcess(tmp_path / "two")
        second.write_config()
        second.sip_port = first.sip_port
        second.write_config()
        try:
            await second.start()
            raise AssertionError("a second gateway on the same port started")
        except RuntimeError:
            pass
        assert "cannot listen for SIP on udp 127.0.0.1" in second.log_tail()
        assert "Traceback" not in second.log_tail()
    finally:
        await first.stop()
