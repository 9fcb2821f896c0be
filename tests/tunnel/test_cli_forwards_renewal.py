"""The pki CLI as a user runs it, static forwards, renewal over the tunnel, metrics and the HTTP route."""

from __future__ import annotations

import asyncio
import datetime as dt
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry, generate_latest

from gateway.tunnel import pki
from gateway.tunnel.forwards import start_forwards
from gateway.tunnel.http import add_tunnel_routes
from gateway.tunnel.metrics import register_metrics
from gateway.tunnel.renewal import IdentityFiles, RenewalAgent, RenewalAuthority
from gateway.tunnel.service import TunnelService

from .helpers import eventually, free_port, tunnel_config
from .pkihelp import TestCa


def seabridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
        env={"PYTHONPATH": str(Path(__file__).resolve().parents[2]), "PATH": "/usr/bin:/bin"},
    )


def test_pki_cli_round_trip(tmp_path: Path) -> None:
    ca_dir, site_dir = tmp_path / "hq", tmp_path / "site"
    for d, node in ((ca_dir, "hq"), (site_dir, "kinshasa")):
        d.mkdir()
        (d / "gw.toml").write_text(f'node_name = "{node}"\ndata_dir = "{d}/var"\n[tunnel]\nenabled = true\n')
    r = seabridge("pki", "init-ca", "--name", "Acme CA", "-c", "gw.toml", cwd=ca_dir)
    assert r.returncode == 0, r.stderr
    again = seabridge("pki", "init-ca", "-c", "gw.toml", cwd=ca_dir)
    assert again.returncode == 2 and "refusing to replace" in again.stderr
    r = seabridge("pki", "request", "-c", "gw.toml", cwd=site_dir)
    assert r.returncode == 0, r.stderr
    csr = site_dir / "var/tunnel/kinshasa.csr"
    key = site_dir / "var/tunnel/node.key"
    assert csr.exists() and key.stat().st_mode & 0o777 == 0o600
    # The CSR travels to the CA; the key does not.
    (ca_dir / "kinshasa.csr").write_bytes(csr.read_bytes())
    wrong = seabridge("pki", "issue", "lagos", "--csr", "kinshasa.csr", "-c", "gw.toml", cwd=ca_dir)
    assert wrong.returncode == 2 and "not 'lagos'" in wrong.stderr
    r = seabridge("pki", "issue", "kinshasa", "--csr", "kinshasa.csr", "--days", "90", "-c", "gw.toml", cwd=ca_dir)
    assert r.returncode == 0, r.stderr
    (site_dir / "var/tunnel/ca.pem").write_bytes((ca_dir / "var/tunnel/ca.pem").read_bytes())
    r = seabridge("pki", "install", str(ca_dir / "kinshasa.pem"), "-c", "gw.toml", cwd=site_dir)
    assert r.returncode == 0, r.stderr
    r = seabridge("pki", "show", "-c", "gw.toml", cwd=site_dir)
    assert "CN=kinshasa" in r.stdout and "CN=Acme CA" in r.stdout
    files = IdentityFiles(site_dir / "var/tunnel/ca.pem", site_dir / "var/tunnel/node.pem", key)
    identity = files.load("kinshasa")
    pki.verify_issued_by(identity.cert, identity.ca)


@pytest.fixture
async def pair(tmp_path: Path) -> AsyncIterator[tuple[TunnelService, TunnelService, TestCa]]:
    ca = TestCa()
    port = free_port()
    hq = TunnelService(
        tunnel_config(
            "hq",
            listen=[f"127.0.0.1:{port}"],
            peers=[{"name": "site1", "dial": False, "paths": [{"name": "p"}]}],
            services=[{"name": "pbx", "target": f"127.0.0.1:{free_port()}"}],
        ),
        ca.identity("hq"),
    )
    site = TunnelService(
        tunnel_config(
            "site1",
            peers=[{"name": "hq", "paths": [{"name": "p", "address": "127.0.0.1", "port": port}]}],
            forwards=[{"name": "sip", "listen": "127.0.0.1:0", "peer": "hq", "service": "pbx"}],
        ),
        ca.identity("site1", days=10),
    )
    await hq.start()
    await site.start()
    try:
        async with asyncio.timeout(20):
            await site.wait_connected("hq")
        yield site, hq, ca
    finally:
        await site.stop()
        await hq.stop()


async def test_static_udp_forward_reaches_the_service_target(
    pair: tuple[TunnelService, TunnelService, TestCa],
) -> None:
    site, hq, _ = pair
    target = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    host, port = hq.config.services[0].target.split(":")
    target.bind((host, int(port)))
    target.setblocking(False)
    forwards = await start_forwards(site)
    hq_forwards = await start_forwards(hq)
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    phone.setblocking(False)
    loop = asyncio.get_running_loop()
    try:
        phone.sendto(b"INVITE sip:100@hq SIP/2.0\r\n\r\n", forwards[0].local_address)
        async with asyncio.timeout(10):
            data, src = await loop.sock_recvfrom(target, 2048)
        assert data.startswith(b"INVITE")
        target.sendto(b"SIP/2.0 100 Trying\r\n\r\n", src)
        async with asyncio.timeout(10):
            reply, _ = await loop.sock_recvfrom(phone, 2048)
        assert reply.startswith(b"SIP/2.0 100")
    finally:
        for f in forwards + hq_forwards:
            f.stop()
        phone.close()
        target.close()


async def test_renewal_over_the_tunnel(pair: tuple[TunnelService, TunnelService, TestCa], tmp_path: Path) -> None:
    site, hq, ca = pair
    files = IdentityFiles(tmp_path / "ca.pem", tmp_path / "node.pem", tmp_path / "node.key")
    pki.write_public(files.cert, pki.cert_pem(site.identity.cert))
    pki.write_private(files.key, pki.key_pem(site.identity.key))
    authority = RenewalAuthority(hq, ca.key, ("site1",))
    agent = RenewalAgent(site, files, "hq", dt.timedelta(days=30))
    old_serial = site.identity.cert.serial_number
    assert await agent.check()  # 10 days left < 30: due
    await eventually(lambda: site.identity.cert.serial_number != old_serial)
    assert authority.issued == 1
    renewed = pki.load_cert(files.cert)
    assert renewed.serial_number == site.identity.cert.serial_number
    assert renewed.not_valid_after_utc > dt.datetime.now(dt.UTC) + dt.timedelta(days=300)
    assert renewed.public_key() == pki.load_key(files.key).public_key() and not files.next_key.exists()
    assert not await agent.check()
    # The renewed certificate is used for new connections: drop the link and it comes back.
    assert site.links["hq"].control is not None
    site.links["hq"].control.close("test: reconnect")
    async with asyncio.timeout(20):
        await site.wait_connected("hq")
    assert hq.links["site1"].control is not None
    peer_cert = hq.links["site1"].control.tls._conn.get_peer_certificate(as_cryptography=True)
    assert peer_cert is not None and peer_cert.serial_number == renewed.serial_number


async def test_metrics_and_status_route(pair: tuple[TunnelService, TunnelService, TestCa]) -> None:
    site, hq, _ = pair
    await eventually(lambda: site.links["hq"].core.monitor.active == "p")
    registry = CollectorRegistry()
    register_metrics(site, registry)
    text = generate_latest(registry).decode()
    assert 'seabridge_tunnel_link_up{peer="hq"} 1.0' in text
    assert 'seabridge_tunnel_path_active{path="p",peer="hq"} 1.0' in text
    assert 'seabridge_tunnel_frames_dropped_total{peer="hq",reason="replayed"} 0.0' in text
    app = web.Application()
    add_tunnel_routes(app, site)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    server = web.TCPSite(runner, "127.0.0.1", port)
    await server.start()
    try:
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/api/tunnel") as response,
        ):
            status = await response.json()
        assert status["node"] == "site1"
        assert status["links"]["hq"]["connected"] and status["links"]["hq"]["active_path"] == "p"
        assert status["links"]["hq"]["paths"][0]["address"] == f"127.0.0.1:{hq.config.listen[0].split(':')[1]}"
    finally:
        await runner.cleanup()
