"""Re-reading the configuration file while running (SIGHUP): the tunnel's peers and routes apply live.

The peers list is the tunnel's trusted list, so an operator revokes a site by removing it and
sending SIGHUP, without the restart that would drop every call of every other site. The whole
file is validated as at start-up; a bad one is logged (naming the key) and changes nothing.
Whatever else differs from the running configuration is logged as applying at restart.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from gateway.config import ConfigError, GatewayConfig, load_config
from gateway.tunnel.config import TunnelConfig
from gateway.tunnel.service import TunnelService

log = logging.getLogger("seabridge.reload")

# The parts of [tunnel] that apply_peers takes live.
LIVE_TUNNEL_KEYS = frozenset({"peers", "routes"})


def restart_only(running: GatewayConfig, new: GatewayConfig, tunnel_live: bool) -> list[str]:
    """Names of the settings that differ and wait for a restart (``tunnel.mtu``, ``sip``, ...)."""
    out = []
    for f in dataclasses.fields(GatewayConfig):
        old_value, new_value = getattr(running, f.name), getattr(new, f.name)
        if old_value == new_value:
            continue
        if f.name == "tunnel" and tunnel_live and new.tunnel.enabled:
            out += [f"tunnel.{name}" for name in _tunnel_differences(running.tunnel, new.tunnel)]
        else:
            out.append(f.name)
    return out


def _tunnel_differences(old: TunnelConfig, new: TunnelConfig) -> list[str]:
    return [
        f.name
        for f in dataclasses.fields(TunnelConfig)
        if f.name not in LIVE_TUNNEL_KEYS and getattr(old, f.name) != getattr(new, f.name)
    ]


def reload_config(path: Path, running: GatewayConfig, tunnel: TunnelService | None) -> GatewayConfig:
    """Re-read ``path`` and apply what can be applied live; returns the configuration now in effect."""
    try:
        new = load_config(path)
    except ConfigError as exc:
        log.error("configuration not reloaded; the running one is kept: %s", exc, extra={"key": exc.key})
        return running
    for name in restart_only(running, new, tunnel_live=tunnel is not None):
        log.warning("configuration %s changed; applies at restart", name, extra={"setting": name})
    if tunnel is None or not new.tunnel.enabled:
        log.info("configuration reloaded", extra={"path": str(path)})
        return running
    applied = tunnel.apply_peers(new.tunnel)
    log.info(
        "configuration reloaded",
        extra={
            "path": str(path),
            "peers_added": ",".join(applied.added),
            "peers_removed": ",".join(applied.removed),
            "peers_changed": ",".join(applied.changed),
            "peers_failed": ",".join(applied.failed),
            "routes_changed": applied.routes_changed,
        },
    )
    live = dataclasses.replace(running.tunnel, peers=tunnel.config.peers, routes=tunnel.config.routes)
    return dataclasses.replace(running, tunnel=live)


class ConfigReloader:
    """What SIGHUP calls. Install it before starting (SIGHUP would otherwise end the process);
    a reload asked for during start-up is done once ``started`` is called."""

    def __init__(self, path: str | Path | None, running: GatewayConfig) -> None:
        self.path = Path(path) if path is not None else None
        self.running = running
        self.tunnel: TunnelService | None = None
        self._started = False
        self._pending = False
        self._stopping = False

    def started(self, tunnel: TunnelService | None) -> None:
        self.tunnel = tunnel
        self._started = True
        if self._pending:
            self._pending = False
            self.reload()

    def stopping(self) -> None:
        """Shutdown has begun: later SIGHUPs are ignored (and no longer end the process)."""
        self._stopping = True

    def reload(self) -> None:
        if self._stopping:
            log.info("SIGHUP ignored: stopping")
            return
        if self.path is None:
            log.warning("SIGHUP ignored: started on the built-in defaults, no configuration file to re-read")
            return
        if not self._started:
            self._pending = True
            log.info("SIGHUP during start-up: the configuration is re-read once running")
            return
        log.info("SIGHUP: re-reading the configuration", extra={"path": str(self.path)})
        try:
            self.running = reload_config(self.path, self.running, self.tunnel)
        except Exception:
            log.exception("configuration reload failed")
