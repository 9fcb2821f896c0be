"""The SIP service's parts as configured: shared by the gateway and its extra SIP workers."""

from __future__ import annotations

import dataclasses
import socket
import ssl
from contextlib import AsyncExitStack
from dataclasses import dataclass

from gateway.cdr_store import SqliteCdrStore
from gateway.config import GatewayConfig, MediaConfig
from gateway.location import LocationStore, MemoryLocationStore, RedisLocationStore
from gateway.media_adapter import RelayAllocator, open_media
from gateway.sip.digest import DigestAuthenticator
from gateway.sip.parser import Limits
from gateway.sip.registrar import RegistrarPolicy
from gateway.sip.shard import SINGLE_PROCESS, Shard
from gateway.sip.transaction import TimerConfig
from gateway.sip_service import SipSettings
from gateway.storage.gateway_db import open_gateway_db
from gateway.storage.sqlite import SqliteDatabase
from gateway.users import SqliteUserStore


def advertised(bind: str, configured: str) -> str:
    """The address peers should use: configured, else the bind address, else this host's primary one."""
    if configured:
        return configured
    if bind not in ("0.0.0.0", "::"):
        return bind
    # A UDP "connect" sends nothing; it only asks the kernel which source address it would use.
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
            return str(s.getsockname()[0])
        except OSError:
            return "127.0.0.1"


def sip_settings(
    config: GatewayConfig,
    sip_address: str,
    *,
    port: int | None = None,
    tcp_port: int | None = None,
    tls_port: int | None = None,
    server_ssl: ssl.SSLContext | None = None,
    client_ssl: ssl.SSLContext | None = None,
    keepalive_interval: float = 0.0,
    shard: Shard = SINGLE_PROCESS,
    worker_run: str = "",
    stream_ports: tuple[tuple[str, int], ...] = (),
) -> SipSettings:
    sip_cfg = config.sip
    return SipSettings(
        node=config.node_name,
        bind=sip_cfg.bind,
        port=sip_cfg.udp_port if port is None else port,
        advertised_address=sip_address,
        media_address=advertised(config.media.bind, config.media.advertised_address),
        timers=TimerConfig(t1=sip_cfg.t1_ms / 1000, t2=sip_cfg.t2_ms / 1000, t4=sip_cfg.t4_ms / 1000),
        policy=RegistrarPolicy(
            sip_cfg.min_expires, sip_cfg.max_expires, sip_cfg.default_expires, sip_cfg.max_contacts_per_user
        ),
        limits=Limits(max_message_bytes=sip_cfg.max_message_bytes),
        ring_timeout=float(sip_cfg.ring_timeout_s),
        rtp_timeout=float(config.media.rtp_timeout_s),
        user_agent=sip_cfg.user_agent,
        tenant_for_domain=config.tenant_for_domain,
        tcp_port=tcp_port,
        tls_port=tls_port,
        server_ssl=server_ssl,
        client_ssl=client_ssl,
        stream_idle_timeout=float(sip_cfg.stream_idle_timeout_s),
        checkpoint_interval=sip_cfg.checkpoint_interval_s,
        keepalive_interval=keepalive_interval,
        max_call_duration=config.max_call_duration,
        dial_plan=lambda tenant: t.dial_plan if (t := config.tenant(tenant)) is not None else (),
        shard=shard,
        worker_run=worker_run,
        stream_ports=stream_ports,
        recover=shard.index == 0,
        overload_queue_delay=sip_cfg.overload_queue_delay_ms / 1000,
    )


def authenticator(config: GatewayConfig, nonce_secret: bytes) -> DigestAuthenticator:
    return DigestAuthenticator(
        nonce_secret,
        float(config.sip.nonce_ttl_s),
        tuple(config.sip.digest_algorithms),
        per_realm={t.domain: tuple(t.digest_algorithms) for t in config.tenants if t.digest_algorithms},
    )


def open_locations(config: GatewayConfig) -> LocationStore:
    """Registrations: shared in Redis when configured (several gateways, or SIP workers)."""
    if config.storage.redis_url:
        return RedisLocationStore(config.storage.redis_url)
    return MemoryLocationStore()


@dataclass(frozen=True)
class SipStores:
    """What the SIP service reads and writes, opened for this process (closed with ``stack``)."""

    db: SqliteDatabase
    users: SqliteUserStore
    cdrs: SqliteCdrStore
    locations: LocationStore


def open_sip_stores(config: GatewayConfig, stack: AsyncExitStack) -> SipStores:
    db = open_gateway_db(config)
    stack.callback(db.close)
    users = SqliteUserStore(db)
    stack.callback(users.close)
    locations = open_locations(config)
    stack.push_async_callback(locations.close)
    return SipStores(db, users, SqliteCdrStore(db), locations)


async def open_media_share(config: GatewayConfig, index: int, stack: AsyncExitStack) -> RelayAllocator:
    """The relay over SIP worker ``index``'s slice of the media ports (closed with ``stack``)."""
    media = await open_media(media_share(config, index), advertised(config.media.bind, config.media.advertised_address))
    stack.push_async_callback(media.close)
    return media


def media_share(config: GatewayConfig, index: int) -> MediaConfig:
    """SIP worker ``index``'s slice of the media port range: each worker's relay binds its own ports."""
    media, count = config.media, config.sip.workers
    if count == 1:
        return media
    span = (media.port_max - media.port_min + 1) // count
    span -= span % 2  # RTP/RTCP pairs stay on even/odd ports
    low = media.port_min + index * span
    high = media.port_max if index == count - 1 else low + span - 1
    return dataclasses.replace(media, port_min=low, port_max=high)
