"""Run the tunnel on its own from a gateway configuration (a hub, or the test harness).

``build_tunnel`` is also what the gateway's ``run`` command calls to add the tunnel
to the full gateway: it loads the identity, opens the outbox, starts forwards and
certificate renewal, and returns a handle to stop it all.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

from gateway.config import GatewayConfig
from gateway.storage.sqlite import SqliteDatabase
from gateway.tunnel import pki
from gateway.tunnel.forwards import UdpForward, start_forwards
from gateway.tunnel.messaging import OUTBOX_SCHEMA, SqliteOutboxStore
from gateway.tunnel.reload import ConfigReloader
from gateway.tunnel.renewal import IdentityFiles, RenewalAgent, RenewalAuthority
from gateway.tunnel.service import TunnelService

log = logging.getLogger("seabridge.tunnel")


def node_name(config: GatewayConfig) -> str:
    return config.tunnel.node or config.node_name


def identity_files(config: GatewayConfig) -> IdentityFiles:
    t = config.tunnel
    return IdentityFiles(_path(config, t.ca), _path(config, t.certificate), _path(config, t.key))


def _path(config: GatewayConfig, value: str) -> Path:
    path = Path(value)
    return path if path.is_absolute() else config.data_path / path


@dataclass
class RunningTunnel:
    service: TunnelService
    forwards: list[UdpForward]
    db: SqliteDatabase
    agent: RenewalAgent | None = None
    authority: RenewalAuthority | None = None
    _tasks: list[asyncio.Task[None]] = field(default_factory=list)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for forward in self.forwards:
            forward.stop()
        await self.service.stop()
        self.db.close()


async def build_tunnel(config: GatewayConfig) -> RunningTunnel:
    t = config.tunnel
    files = identity_files(config)
    identity = files.load(node_name(config))
    db = SqliteDatabase(_path(config, t.outbox), OUTBOX_SCHEMA)
    service = TunnelService(t, identity, outbox=SqliteOutboxStore(db))
    await service.start()
    running = RunningTunnel(service, await start_forwards(service), db)
    if t.ca_key:
        running.authority = RenewalAuthority(service, pki.load_key(_path(config, t.ca_key)), t.renewal_allowed)
    if t.ca_node:
        agent = RenewalAgent(service, files, t.ca_node, dt.timedelta(days=t.renew_before_days))
        running.agent = agent
        running._tasks.append(asyncio.ensure_future(_renewal_loop(agent)))
    return running


async def _renewal_loop(agent: RenewalAgent) -> None:
    while True:
        try:
            await agent.check()
        except Exception:
            log.exception("certificate renewal check failed")
        await asyncio.sleep(3600)


async def serve_forever(config: GatewayConfig, config_path: str | Path | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    reloader = ConfigReloader(config_path, config)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    running = await build_tunnel(config)
    reloader.started(running.service)
    log.info("tunnel %s running", running.service.node)
    try:
        await stop.wait()
    finally:
        reloader.stopping()
        await running.stop()
