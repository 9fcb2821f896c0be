"""The gateway's configuration: TOML in, frozen dataclasses out, validated at start-up.

Built-in defaults live in the dataclass defaults below (the package data file
``defaults.toml`` documents them); a user file overrides any subset. Each
section is its own dataclass so a package can own its part (billing, TV, tunnel).
"""

from __future__ import annotations

import ipaddress
import socket
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from gateway.configschema import ConfigError, InvalidField, bounds, load_section
from media.tv.config import TvConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["json", "text"] = "json"


@dataclass(frozen=True)
class SipConfig:
    bind: str = "0.0.0.0"
    udp_port: int = field(default=5060, metadata=bounds(1, 65535))
    # Address put in Via, Contact, Record-Route and SDP; empty means "the bind
    # address, or this host's primary address when bound to every interface".
    advertised_address: str = ""
    max_message_bytes: int = field(default=65535, metadata=bounds(1024, 65535))
    # RFC 3261 timers; raise T1 for satellite links (600 ms round trips).
    t1_ms: int = field(default=500, metadata=bounds(50, 10000))
    t2_ms: int = field(default=4000, metadata=bounds(100, 60000))
    t4_ms: int = field(default=5000, metadata=bounds(100, 60000))
    min_expires: int = field(default=60, metadata=bounds(1, 86400))
    max_expires: int = field(default=3600, metadata=bounds(1, 604800))
    default_expires: int = field(default=3600, metadata=bounds(1, 604800))
    max_contacts_per_user: int = field(default=10, metadata=bounds(1, 100))
    nonce_ttl_s: int = field(default=300, metadata=bounds(10, 86400))
    digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ("SHA-256", "MD5")
    # How long a callee may ring before the caller gets 480 (no answer).
    ring_timeout_s: int = field(default=60, metadata=bounds(5, 600))
    user_agent: str = "Seabridge"

    def __post_init__(self) -> None:
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")
        if self.t2_ms < self.t1_ms:
            raise ValueError("t2_ms must not be below t1_ms")
        if not self.digest_algorithms:
            raise ValueError("digest_algorithms must name at least one algorithm")
        _check_address("bind", self.bind)
        if self.advertised_address:
            _check_address("advertised_address", self.advertised_address)


@dataclass(frozen=True)
class MediaConfig:
    bind: str = "0.0.0.0"
    advertised_address: str = ""
    port_min: int = field(default=20000, metadata=bounds(1024, 65534))
    port_max: int = field(default=29999, metadata=bounds(1025, 65535))
    # A leg that sends no RTP for this long after answer ends the call.
    rtp_timeout_s: int = field(default=60, metadata=bounds(5, 3600))

    def __post_init__(self) -> None:
        if self.port_max - self.port_min < 3:
            raise ValueError("port_max must leave room for at least two RTP/RTCP port pairs above port_min")
        _check_address("bind", self.bind)
        if self.advertised_address:
            _check_address("advertised_address", self.advertised_address)


@dataclass(frozen=True)
class HttpConfig:
    bind: str = "0.0.0.0"
    port: int = field(default=8080, metadata=bounds(1, 65535))


@dataclass(frozen=True)
class StorageConfig:
    # "sqlite" keeps everything under data_dir; "postgresql" needs postgres_dsn.
    backend: Literal["sqlite", "postgresql"] = "sqlite"
    postgres_dsn: str = ""
    # Shared live state (locations, live spend) for several gateways; empty = in-process.
    redis_url: str = ""

    def __post_init__(self) -> None:
        if self.backend == "postgresql" and not self.postgres_dsn:
            raise InvalidField("postgres_dsn", "backend = 'postgresql' needs postgres_dsn")


@dataclass(frozen=True)
class TenantConfig:
    domain: str
    aliases: tuple[str, ...] = ()
    timezone: str = "Asia/Shanghai"

    def __post_init__(self) -> None:
        _check_timezone(self.timezone)


@dataclass(frozen=True)
class GatewayConfig:
    node_name: str = field(default_factory=socket.gethostname)
    role: Literal["site", "hub", "hq"] = "site"
    data_dir: str = "./var"
    log: LogConfig = field(default_factory=LogConfig)
    sip: SipConfig = field(default_factory=SipConfig)
    media: MediaConfig = field(default_factory=MediaConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    storage: StorageConfig = field(default_factory=StorageConfig)
    tenants: tuple[TenantConfig, ...] = ()
    tv: TvConfig = field(default_factory=TvConfig)

    def __post_init__(self) -> None:
        seen: dict[str, str] = {}
        for tenant in self.tenants:
            for name in (tenant.domain, *tenant.aliases):
                if name in seen:
                    raise ValueError(f"domain {name!r} is claimed by tenants {seen[name]!r} and {tenant.domain!r}")
                seen[name] = tenant.domain

    @property
    def data_path(self) -> Path:
        return Path(self.data_dir)

    def tenant_for_domain(self, domain: str) -> str:
        """The tenant a SIP domain names: an alias maps to its tenant, anything else is itself."""
        domain = domain.lower()
        for tenant in self.tenants:
            if domain == tenant.domain or domain in tenant.aliases:
                return tenant.domain
        return domain

    def tenant_timezone(self, tenant: str) -> str:
        for t in self.tenants:
            if t.domain == tenant:
                return t.timezone
        return "Asia/Shanghai"


def _check_address(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise InvalidField(key, f"{value!r} is not an IP address") from None


def _check_timezone(name: str) -> None:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidField("timezone", f"unknown IANA time zone {name!r}") from None


def parse_config(data: dict[str, Any]) -> GatewayConfig:
    return load_section(GatewayConfig, data)


def load_config(path: str | Path | None) -> GatewayConfig:
    """Read and validate a TOML file; ``None`` gives the built-in defaults."""
    if path is None:
        return GatewayConfig()
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError("", f"cannot read {path}: {exc.strerror}") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError("", f"{path} is not valid TOML: {exc}") from None
    try:
        return parse_config(data)
    except ConfigError as exc:
        raise ConfigError(exc.key, f"{exc.problem} (in {path})") from None
