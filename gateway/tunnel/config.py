"""The ``[tunnel]`` configuration section.

Example (a site with a leased line and a satellite path to its hub)::

    [tunnel]
    enabled = true
    node = "kinshasa"
    listen = []                      # sites only dial out
    [[tunnel.peers]]
    name = "paris-hub"
    [[tunnel.peers.paths]]
    name = "leased"
    address = "198.51.100.7"
    port = 4500
    bind = "10.20.0.2"
    priority = 10
    rate_kbps = 4000
    [[tunnel.peers.paths]]
    name = "satellite"
    address = "203.0.113.9"
    priority = 20
    rate_kbps = 2000
    [[tunnel.routes]]
    destination = "*"
    via = "paris-hub"

The hub lists the site as a peer with the same path names and no addresses (it
learns them from the site's authenticated probes). The peers list is also the
trusted list: removing a node revokes it (live, on SIGHUP: ``TunnelService.apply_peers``).
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Literal

from gateway.configschema import InvalidField, bounds
from gateway.tunnel.classes import parse_class
from gateway.tunnel.pki import NODE_NAME


def parse_endpoint(value: str, key: str) -> tuple[str, int]:
    """'10.0.0.1:4500' or '[::1]:4500' -> (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        number = int(port)
    except ValueError:
        raise InvalidField(key, f"{value!r} is not ADDRESS:PORT") from None
    if not sep or not 0 <= number <= 65535:
        raise InvalidField(key, f"{value!r} is not ADDRESS:PORT")
    return host, number


def _check_name(key: str, name: str) -> None:
    if not NODE_NAME.match(name):
        raise InvalidField(key, f"{name!r} is not a node name (lower-case letters, digits, '.', '_', '-')")


def _check_address(key: str, value: str) -> None:
    if value:
        try:
            ipaddress.ip_address(value)
        except ValueError:
            raise InvalidField(key, f"{value!r} is not an IP address") from None


@dataclass(frozen=True)
class TunnelPathConfig:
    name: str
    # The peer's address on this path; empty: learned from the peer's authenticated probes.
    address: str = ""
    port: int = field(default=4500, metadata=bounds(1, 65535))
    # Local address this path leaves from (picks the interface); empty: any.
    bind: str = ""
    # Lower is preferred: traffic uses the best live path.
    priority: int = field(default=10, metadata=bounds(0, 1000))
    # Cap in kbit/s on the wire (IP/UDP included); 0: uncapped.
    rate_kbps: int = field(default=0, metadata=bounds(0, 10_000_000))

    def __post_init__(self) -> None:
        _check_address("address", self.address)
        _check_address("bind", self.bind)


@dataclass(frozen=True)
class TunnelPeerConfig:
    name: str
    paths: tuple[TunnelPathConfig, ...] = ()
    # Dial the peer (TLS over TCP to the path addresses); a hub accepts its sites instead.
    dial: bool = True
    # Send voice on the two best live paths at once (costs double bytes, survives a cut losslessly).
    duplicate_voice: bool = False

    def __post_init__(self) -> None:
        _check_name("name", self.name)
        if not self.paths:
            raise InvalidField("paths", "a peer needs at least one path")
        names = [p.name for p in self.paths]
        if len(set(names)) != len(names):
            raise InvalidField("paths", "path names must be unique")
        if self.dial and not any(p.address for p in self.paths):
            raise InvalidField("dial", "dialling needs an address on at least one path")


@dataclass(frozen=True)
class TunnelRouteConfig:
    # A node name, or "*" for every node not otherwise reachable.
    destination: str
    via: str


@dataclass(frozen=True)
class TunnelForwardConfig:
    """A local UDP port whose datagrams travel to ``service`` on node ``peer``."""

    name: str
    listen: str
    peer: str
    service: str
    traffic_class: str = "control"

    def __post_init__(self) -> None:
        parse_endpoint(self.listen, "listen")
        try:
            parse_class(self.traffic_class)
        except ValueError as exc:
            raise InvalidField("traffic_class", str(exc)) from None


@dataclass(frozen=True)
class TunnelServiceConfig:
    """A service this node offers to forwards elsewhere: flows for ``name`` go to UDP ``target``."""

    name: str
    target: str

    def __post_init__(self) -> None:
        parse_endpoint(self.target, "target")


@dataclass(frozen=True)
class TunnelConfig:
    enabled: bool = False
    # This node's name, also its certificate's common name; empty: the gateway's node_name.
    node: str = ""
    # PKI files, relative to data_dir unless absolute.
    ca: str = "tunnel/ca.pem"
    certificate: str = "tunnel/node.pem"
    key: str = "tunnel/node.key"
    # Only on the node holding the CA key: renew certificates over the tunnel.
    ca_key: str = ""
    renewal_allowed: tuple[str, ...] = ()
    # Where this node sends its renewal request (the node holding the CA key); empty: no auto-renewal.
    ca_node: str = ""
    renew_before_days: int = field(default=30, metadata=bounds(1, 3650))
    # ADDRESS:PORT for the TLS control channel (TCP) and the media channel (UDP) alike.
    listen: tuple[str, ...] = ()
    peers: tuple[TunnelPeerConfig, ...] = ()
    routes: tuple[TunnelRouteConfig, ...] = ()
    forwards: tuple[TunnelForwardConfig, ...] = ()
    services: tuple[TunnelServiceConfig, ...] = ()
    probe_interval_ms: int = field(default=200, metadata=bounds(20, 10_000))
    idle_probe_interval_ms: int = field(default=1000, metadata=bounds(50, 60_000))
    dead_after_ms: int = field(default=600, metadata=bounds(50, 60_000))
    restore_after_ms: int = field(default=2000, metadata=bounds(0, 600_000))
    rekey_interval_s: int = field(default=3600, metadata=bounds(10, 86_400))
    rekey_overlap_s: int = field(default=30, metadata=bounds(1, 3600))
    replay_window: int = field(default=8192, metadata=bounds(64, 1 << 20))
    # Retransmission window for TV/control flows: this many path RTTs, within the bounds below.
    # Five leave time for four NACK rounds (a NACK, then one every 1.25 RTT, each answered a
    # round trip later); four RTTs allowed only three.
    retransmit_window_rtts: float = field(default=5.0, metadata=bounds(1.0, 50.0))
    retransmit_window_min_ms: int = field(default=1000, metadata=bounds(50, 60_000))
    retransmit_window_max_ms: int = field(default=10_000, metadata=bounds(100, 120_000))
    mtu: int = field(default=1400, metadata=bounds(576, 9000))
    keepalive_s: float = field(default=5.0, metadata=bounds(0.5, 600.0))
    control_timeout_s: float = field(default=20.0, metadata=bounds(2.0, 3600.0))
    message_retry_s: float = field(default=30.0, metadata=bounds(1.0, 86_400.0))
    # Where pending store-and-forward messages are kept, relative to data_dir.
    outbox: str = "tunnel/outbox.db"
    dscp: Literal["none", "ef"] = "none"

    def __post_init__(self) -> None:
        if self.node:
            _check_name("node", self.node)
        for endpoint in self.listen:
            parse_endpoint(endpoint, "listen")
        names = [p.name for p in self.peers]
        if len(set(names)) != len(names):
            raise InvalidField("peers", "peer names must be unique")
        for route in self.routes:
            if route.via not in names:
                raise InvalidField("routes", f"route to {route.destination!r} goes via {route.via!r}, not a peer")
        if len({f.name for f in self.forwards}) != len(self.forwards):
            raise InvalidField("forwards", "forward names must be unique")
        if self.retransmit_window_max_ms < self.retransmit_window_min_ms:
            raise InvalidField("retransmit_window_max_ms", "must not be below retransmit_window_min_ms")
        if self.ca_key and not self.renewal_allowed:
            raise InvalidField("renewal_allowed", "with ca_key set, list the nodes that may renew ('*' for all)")

    def route_map(self) -> dict[str, str]:
        return {r.destination: r.via for r in self.routes}
