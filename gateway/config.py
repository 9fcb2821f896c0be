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

from billing.config import BillingConfig
from gateway.configschema import ConfigError, InvalidField, bounds, load_section
from gateway.pbx.config import PbxConfig
from gateway.tunnel.config import TunnelConfig
from gateway.tunnel.pki import NODE_NAME
from gateway.webrtc.config import WebRtcConfig
from media.tv.config import TvConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]


@dataclass(frozen=True)
class LogConfig:
    level: Literal["debug", "info", "warning", "error"] = "info"
    # auto: readable text on a terminal, one JSON object per line otherwise (journald, files).
    format: Literal["auto", "json", "text"] = "auto"


@dataclass(frozen=True)
class SipConfig:
    bind: str = "0.0.0.0"
    transports: tuple[Literal["UDP", "TCP", "TLS"], ...] = ("UDP", "TCP", "TLS")
    udp_port: int = field(default=5060, metadata=bounds(0, 65535))
    tcp_port: int = field(default=5060, metadata=bounds(0, 65535))
    tls_port: int = field(default=5061, metadata=bounds(0, 65535))
    # PEM files; empty: a self-signed certificate generated at first start under data_dir/tls.
    tls_certificate: str = ""
    tls_private_key: str = ""
    # CAs that vouch for TLS servers we connect to (trunks); empty: the system's CAs.
    tls_ca_file: str = ""
    tls_verify_server: bool = True
    # A TCP/TLS connection with no traffic for this long is closed.
    stream_idle_timeout_s: int = field(default=600, metadata=bounds(10, 86400))
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
    # Registered contacts are sent OPTIONS this often (keeps NAT bindings open; a contact that
    # does not answer is dropped, so calls stop ringing phones that are gone). 0: off.
    keepalive_interval_s: int = field(default=30, metadata=bounds(0, 3600))
    # Calls in progress are checkpointed this often: a crash loses at most this much of a call.
    checkpoint_interval_s: float = field(default=15.0, metadata=bounds(0.2, 3600))
    # On SIGTERM, calls are ended with BYE on both legs; wait this long for them to finish.
    shutdown_grace_s: float = field(default=10.0, metadata=bounds(0, 600))
    user_agent: str = "Seabridge"
    # A new INVITE (one not yet challenged) is refused with 503 and Retry-After while the oldest
    # SIP datagram still waiting in the socket's queue has waited longer than this: past
    # capacity, callers are told at once instead of every call timing out in a retransmission
    # storm. It refuses more calls than the excess near capacity (see docs/ARCHITECTURE.md),
    # so it is off (0) unless set; 1000 is a reasonable value.
    overload_queue_delay_ms: int = field(default=0, metadata=bounds(0, 60000))
    # SIP worker processes sharing the SIP port (SO_REUSEPORT), calls sharded by Call-ID so
    # both cores of a box work; more than 1 needs [storage] redis_url (shared registrations).
    workers: int = field(default=1, metadata=bounds(1, 64))

    def __post_init__(self) -> None:
        if not self.min_expires <= self.default_expires <= self.max_expires:
            raise ValueError("need min_expires <= default_expires <= max_expires")
        if self.t2_ms < self.t1_ms:
            raise ValueError("t2_ms must not be below t1_ms")
        if not self.digest_algorithms:
            raise InvalidField("digest_algorithms", "name at least one algorithm")
        if "UDP" not in self.transports:
            raise InvalidField("transports", "UDP is required (phones and trunks fall back to it)")
        if bool(self.tls_certificate) != bool(self.tls_private_key):
            raise InvalidField("tls_private_key", "tls_certificate and tls_private_key go together")
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
    # 0 relays media in the gateway's own process; N > 0 shards calls over N relay
    # worker processes (one per core on a busy box).
    workers: int = field(default=0, metadata=bounds(0, 64))
    # DiffServ code point set on relayed packets (46 = EF, expedited forwarding for voice).
    dscp: int = field(default=46, metadata=bounds(0, 63))

    def __post_init__(self) -> None:
        if self.port_max - self.port_min < 3:
            raise ValueError("port_max must leave room for at least two RTP/RTCP port pairs above port_min")
        _check_address("bind", self.bind)
        if self.advertised_address:
            _check_address("advertised_address", self.advertised_address)


@dataclass(frozen=True)
class HttpConfig:
    # Plain HTTP (health, metrics, local tools) stays on loopback unless configured otherwise.
    bind: str = "127.0.0.1"
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
class DialRule:
    """Numbers starting with ``prefix`` go to ``trunk``: drop ``strip`` digits, add ``prepend``."""

    prefix: str
    trunk: str
    strip: int = field(default=0, metadata=bounds(0, 32))
    prepend: str = ""

    def __post_init__(self) -> None:
        if not self.prefix or not all(c in "0123456789*#+" for c in self.prefix):
            raise InvalidField("prefix", f"{self.prefix!r} is not a dialling prefix (digits, * # +)")


@dataclass(frozen=True)
class TrunkConfig:
    """A SIP peer (the HQ PBX, another gateway, a carrier) reached over a trunk."""

    name: str
    tenant: str
    # The peer's IP address (not needed for a trunk through the tunnel).
    host: str = ""
    port: int = field(default=5060, metadata=bounds(1, 65535))
    transport: Literal["UDP", "TCP", "TLS"] = "UDP"
    # The domain in the Request-URI and our From towards the peer (default: host).
    domain: str = ""
    # Digest credentials we answer the peer's challenges with; register = also REGISTER with them.
    username: str = ""
    password: str = ""
    register: bool = False
    register_expires: int = field(default=600, metadata=bounds(60, 86400))
    # Billing account charged for calls that enter through this trunk (default trunk-<name>@<tenant>),
    # and the site it belongs to in the account tree (default trunk-<name>).
    account: str = ""
    site: str = ""
    # Requests from host (and port, if set here) are this trunk's: IP-identified peering.
    inbound: bool = True
    # Rate calls that enter through this trunk here (charged to `account`). Unset: yes, except for
    # a trunk to another Seabridge gateway over the tunnel, where the call entered, and was rated,
    # already; this gateway then keeps its leg unrated, for audit.
    rate_inbound: bool | None = None
    # Satellite peers: stretch the retransmission timers (Timer B = 64*T1 unless set).
    t1_ms: int = field(default=0, metadata=bounds(0, 10000))
    t2_ms: int = field(default=0, metadata=bounds(0, 60000))
    timer_b_ms: int = field(default=0, metadata=bounds(0, 600000))
    # OPTIONS sent this often tell whether the trunk is up; calls to a down trunk fail at once.
    options_interval_s: int = field(default=30, metadata=bounds(0, 3600))
    # Another Seabridge gateway reached through the tunnel (its node name): SIP and RTP ride
    # tunnel flows to it (docs/tunnel.md), so host and port are not used.
    tunnel_peer: str = ""
    # This trunk's name at that node, needed only when it has several trunks to us.
    tunnel_peer_trunk: str = ""

    def __post_init__(self) -> None:
        if self.tunnel_peer:
            if not NODE_NAME.match(self.tunnel_peer):
                raise InvalidField("tunnel_peer", f"{self.tunnel_peer!r} is not a node name")
            if self.host:
                raise InvalidField("host", "a trunk through the tunnel (tunnel_peer) has no host")
            if self.transport != "UDP":
                raise InvalidField("transport", "a trunk through the tunnel uses UDP (the tunnel encrypts it)")
        else:
            _check_address("host", self.host)
        if self.register and not (self.username and self.password):
            raise InvalidField("username", "register = true needs username and password")

    @property
    def sip_domain(self) -> str:
        return self.domain or self.host or self.tunnel_peer

    @property
    def billing_account(self) -> str:
        return self.account or f"trunk-{self.name}@{self.tenant}"

    @property
    def rates_inbound(self) -> bool:
        return self.rate_inbound if self.rate_inbound is not None else not self.tunnel_peer

    @property
    def billing_site(self) -> str:
        return self.site or f"trunk-{self.name}"


@dataclass(frozen=True)
class TenantConfig:
    domain: str
    aliases: tuple[str, ...] = ()
    timezone: str = "Asia/Shanghai"
    # Overrides sip.digest_algorithms for this tenant's realm (e.g. ["MD5"] for phones that
    # reject a SHA-256 challenge outright, as baresip 1.0 does).
    digest_algorithms: tuple[Literal["SHA-256", "MD5"], ...] = ()
    # Longest call this tenant's users may make, in seconds (0: no limit).
    max_call_duration_s: int = field(default=0, metadata=bounds(0, 7 * 86400))
    # Dialled numbers that leave through trunks.
    dial_plan: tuple[DialRule, ...] = ()

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
    webrtc: WebRtcConfig = field(default_factory=WebRtcConfig)
    tenants: tuple[TenantConfig, ...] = ()
    trunks: tuple[TrunkConfig, ...] = ()
    pbx: PbxConfig = field(default_factory=PbxConfig)
    tunnel: TunnelConfig = field(default_factory=TunnelConfig)
    billing: BillingConfig = field(default_factory=BillingConfig)
    tv: TvConfig = field(default_factory=TvConfig)

    def __post_init__(self) -> None:
        names = {t.name for t in self.trunks}
        if len(names) != len(self.trunks):
            raise InvalidField("trunks", "trunk names must be unique")
        _check_tunnel_trunks(self.trunks, self.tunnel)
        if self.sip.workers > 1:
            _check_sip_workers(self)
        for i, tenant in enumerate(self.tenants):
            for j, rule in enumerate(tenant.dial_plan):
                if rule.trunk not in names:
                    raise InvalidField(f"tenants[{i}].dial_plan[{j}].trunk", f"no trunk named {rule.trunk!r}")
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

    def trunk(self, name: str) -> TrunkConfig | None:
        for t in self.trunks:
            if t.name == name:
                return t
        return None

    def tenant(self, domain: str) -> TenantConfig | None:
        for t in self.tenants:
            if t.domain == domain:
                return t
        return None

    def max_call_duration(self, tenant: str) -> float | None:
        t = self.tenant(tenant)
        return float(t.max_call_duration_s) if t is not None and t.max_call_duration_s else None

    def tenant_timezone(self, tenant: str) -> str:
        for t in self.tenants:
            if t.domain == tenant:
                return t.timezone
        return "Asia/Shanghai"


def _check_sip_workers(config: GatewayConfig) -> None:
    """What several SIP workers need, and what only a single SIP process can do yet."""
    if not config.storage.redis_url:
        raise InvalidField("sip.workers", "several SIP workers share registrations in Redis: set storage.redis_url")
    if any(t.tunnel_peer for t in config.trunks):
        raise InvalidField("sip.workers", "trunks through the tunnel (tunnel_peer) need sip.workers = 1")
    if config.billing.replicate_to:
        raise InvalidField("sip.workers", "billing.replicate_to (ratings sent to HQ) needs sip.workers = 1")
    if (config.media.port_max - config.media.port_min + 1) // config.sip.workers < 4:
        raise InvalidField("sip.workers", "each SIP worker needs at least 4 media ports (media.port_min..port_max)")


def _check_tunnel_trunks(trunks: tuple[TrunkConfig, ...], tunnel: TunnelConfig) -> None:
    routes = tunnel.route_map()
    for i, trunk in enumerate(trunks):
        if not trunk.tunnel_peer:
            continue
        key = f"trunks[{i}].tunnel_peer"
        if not tunnel.enabled:
            raise InvalidField(key, "a trunk through the tunnel needs [tunnel] enabled = true")
        if not ({trunk.tunnel_peer, "*"} & ({p.name for p in tunnel.peers} | set(routes))):
            raise InvalidField(key, f"{trunk.tunnel_peer!r} is neither a tunnel peer nor reached by a route")


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
