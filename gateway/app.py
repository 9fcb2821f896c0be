"""Builds the gateway from its configuration and runs it: the one place objects are wired."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from secrets import token_hex

from aiohttp import web
from prometheus_client import CollectorRegistry

from billing.http import add_billing_routes
from billing.runtime import BillingRuntime, start_billing
from gateway.api import OTHER_WORKERS_CALLS, setup_api
from gateway.api_auth import TOKENS, require_scope
from gateway.cdr import CallRecord
from gateway.cdr_store import SqliteCdrStore
from gateway.clock import SystemClock
from gateway.config import GatewayConfig
from gateway.errors import StartupError
from gateway.gc_tuning import GcPauses, settle_heap
from gateway.http import METRICS_FROM_WORKERS, METRICS_REFRESH, add_health_check, create_app
from gateway.ledger_replication import LedgerReceiver, LedgerSender
from gateway.location import MemoryLocationStore
from gateway.logs import setup_logging
from gateway.metrics import SipMetrics, process_gauges, register_callbacks
from gateway.secrets_store import load_or_create
from gateway.sip.shard import Shard
from gateway.sip_build import advertised, authenticator, open_media_share, open_sip_stores, sip_settings
from gateway.sip_service import SipService
from gateway.sip_workers import SipWorkerPool
from gateway.tls import client_context, ensure_certificate, server_context
from gateway.tokens import TokenStore
from gateway.trunks import TrunkManager
from gateway.tunnel.reload import ConfigReloader
from gateway.tunnel_gateway import GatewayTunnel, start_tunnel
from gateway.webrtc.wiring import start_webrtc

log = logging.getLogger("seabridge")

SECRET_NAMES = ("sip_nonce_secret",)


@dataclass
class Gateway:
    config: GatewayConfig
    sip: SipService
    http_runner: web.AppRunner
    http_port: int
    https_port: int = 0
    tunnel: GatewayTunnel | None = None
    workers: SipWorkerPool | None = None


async def start_gateway(config: GatewayConfig, stack: AsyncExitStack, config_path: str | Path | None = None) -> Gateway:
    clock = SystemClock()
    data_dir = config.data_path
    data_dir.mkdir(parents=True, exist_ok=True)
    secrets = load_or_create(data_dir, SECRET_NAMES)
    if secrets.created:
        log.warning(
            "generated new secrets",
            extra={"path": str(secrets.path.resolve()), "names": ",".join(secrets.created)},
        )
    else:
        log.info("secrets loaded", extra={"path": str(secrets.path.resolve())})

    stores = open_sip_stores(config, stack)
    db, users, cdrs, locations = stores.db, stores.users, stores.cdrs, stores.locations

    registry = CollectorRegistry()
    sip_metrics = SipMetrics(registry)
    media = await open_media_share(config, 0, stack)
    # Before SIP: it must outlive the SIP service's shutdown (BYEs to tunnel trunks ride it).
    tunnel = await start_tunnel(config, stack, registry)

    sip_cfg = config.sip
    sip_address = advertised(sip_cfg.bind, sip_cfg.advertised_address)
    server_ssl = client_ssl = None
    if "TLS" in sip_cfg.transports:
        if sip_cfg.tls_certificate:
            server_ssl = server_context((Path(sip_cfg.tls_certificate), Path(sip_cfg.tls_private_key)))
        else:
            page = config.webrtc
            names = [sip_address, config.node_name, *page.certificate_names, page.https_bind, *page.ice_addresses]
            files = ensure_certificate(data_dir / "tls", config.node_name, names)
            if files.generated:
                log.warning("generated a self-signed TLS certificate", extra={"path": str(files.certificate.resolve())})
            server_ssl = server_context(files)
        client_ssl = client_context(sip_cfg.tls_ca_file, sip_cfg.tls_verify_server)
    workers = None
    if sip_cfg.workers > 1:
        workers = SipWorkerPool(config, config_path, run_id=token_hex(6))
    settings = sip_settings(
        config,
        sip_address,
        tcp_port=sip_cfg.tcp_port if "TCP" in sip_cfg.transports else None,
        tls_port=sip_cfg.tls_port if "TLS" in sip_cfg.transports else None,
        server_ssl=server_ssl,
        client_ssl=client_ssl,
        keepalive_interval=float(sip_cfg.keepalive_interval_s),
        shard=Shard(0, sip_cfg.workers),
        worker_run=workers.run_id if workers is not None else "",
    )
    auth = authenticator(config, secrets.bytes("sip_nonce_secret"))
    sip = SipService(settings, users, locations, cdrs, media, auth, sip_metrics, clock)
    sip.trunks = TrunkManager(tunnel.trunks if tunnel is not None else config.trunks, sip)
    billing = await start_billing(config)
    stack.push_async_callback(billing.stop)
    sip.billing = billing.live
    sender = None
    if tunnel is not None:
        LedgerReceiver(billing.service.store).attach(tunnel.service)
        if config.billing.replicate_to:
            sender = LedgerSender(tunnel.service, config.billing.replicate_to)
    sip.call_listeners.append(rate_calls(billing, sender))
    await sip.start()
    stack.push_async_callback(sip.stop)
    if tunnel is not None:
        tunnel.attach_sip(sip.local_port)
    await sip.trunks.start()
    stack.push_async_callback(sip.trunks.stop)

    loop = asyncio.get_running_loop()
    relayed = [0]

    async def refresh_relay_totals() -> None:
        relayed[0] = await media.total_packets_relayed()

    stack.callback(GcPauses(registry).close)
    register_callbacks(
        registry,
        gauges={
            **process_gauges(loop),
            "seabridge_registrations": (
                "Registered contacts",
                lambda: float(locations.cached_count(clock.monotonic())),
            ),
        },
        counters={
            "seabridge_rtp_packets_relayed": (
                "RTP/RTCP packets relayed",
                lambda: float(relayed[0]),
            ),
        },
    )
    app = create_app(registry)
    app[TOKENS] = TokenStore(db)
    setup_api(app, sip)
    if workers is not None:
        _wire_workers(app, sip, workers, config.sip.workers)
    if tunnel is not None:
        tunnel.add_routes(app)

    async def api_scope(request: web.Request) -> str | None:
        return (await require_scope(request)).tenant

    add_billing_routes(app, billing.service, api_scope, zone_of=config.tenant_timezone)
    if config.pbx.enabled:
        await _start_pbx(config, sip, cdrs, app, stack)
    if config.tv.enabled:
        await _start_tv(config, registry, app, stack)
    app[METRICS_REFRESH].append(refresh_relay_totals)
    if not isinstance(locations, MemoryLocationStore):

        async def refresh_registrations() -> None:
            await locations.count(clock.monotonic())  # a scan of the shared store, done at scrape time

        app[METRICS_REFRESH].append(refresh_registrations)
    sip_host = sip_cfg.bind if sip_cfg.bind not in ("0.0.0.0", "::") else "127.0.0.1"
    webrtc = await start_webrtc(config, users, cdrs, (sip_host, sip.local_port), registry, clock, stack)
    if webrtc is not None:
        webrtc.add_routes(app)
        sip.set_webrtc_agent(webrtc.agent_address)

    async def sip_health() -> dict[str, object]:
        ports = {f"{t.lower()}_port": sip.port_of(t) for t in sip.transports}
        return {"status": "ok", **ports, "calls": sip.calls_in_progress, "connections": sip.open_connections}

    add_health_check(app, "sip", sip_health)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    site = web.TCPSite(runner, config.http.bind, config.http.port)
    await site.start()
    http_port = _site_port(runner, config.http.port)
    log.info("http listening", extra={"address": f"{config.http.bind}:{http_port}"})
    https_port = await webrtc.serve_https(runner) if webrtc is not None else 0
    if workers is not None:
        # Last: the workers need the SIP port bound and the browser phone's agent address.
        await workers.start(
            sip.local_port,
            {t: sip.port_of(t) for t in sip.transports if t != "UDP"},
            webrtc.agent_address if webrtc is not None else None,
        )
        stack.push_async_callback(workers.stop, 0.0)
    return Gateway(config, sip, runner, http_port, https_port, tunnel, workers)


def _wire_workers(app: web.Application, sip: SipService, workers: SipWorkerPool, count: int) -> None:
    """The other SIP workers, seen through worker 0: metrics and calls (asked at scrape and API
    time), their health, and their calls closed if one dies."""
    app[METRICS_FROM_WORKERS].append(workers.metrics)
    app[OTHER_WORKERS_CALLS] = workers.calls

    async def close_dead_worker_calls() -> None:
        await sip.recover_dead_worker_calls(workers.session_ids)

    workers.on_death = close_dead_worker_calls

    async def sip_workers_health() -> dict[str, object]:
        alive = workers.alive + 1
        if alive < count:
            raise RuntimeError(f"{alive} of {count} SIP workers running (restarting the others)")
        return {"status": "ok", "workers": count, "alive": alive}

    add_health_check(app, "sip_workers", sip_workers_health)


def rate_calls(billing: BillingRuntime, sender: LedgerSender | None) -> Callable[[CallRecord], Awaitable[None]]:
    async def rate(record: CallRecord) -> None:
        # The record is already durable; the ledger is idempotent on (session, leg, run).
        try:
            rating = await billing.live.call_ended(record)
        except Exception:
            log.exception("rating failed; the call stays unrated until rerated", extra={"session": record.session_id})
            return
        if sender is not None:
            await sender.send(record, rating)  # queued durably in the tunnel's outbox

    return rate


async def _start_tv(
    config: GatewayConfig, registry: CollectorRegistry, app: web.Application, stack: AsyncExitStack
) -> None:
    """Domestic TV: its own LAN listener for set-top boxes, the page on the gateway's HTTPS port
    (with the browser phone), the status API behind an admin token."""
    from media.tv.service import TvService
    from media.tv.web import add_tv_routes, add_tv_status_route

    # Time-shifted channels default to each tenant's offset from the site (HQ's evening news
    # in the site's evening): the tenant's zone comes from [[tenants]].
    tv = TvService(config.tv, config.data_path, registry=registry, tenant_zone=config.tenant_timezone)
    await tv.start()
    stack.push_async_callback(tv.stop)
    viewers = web.Application()
    add_tv_routes(viewers, tv, prefix="/iptv")
    runner = web.AppRunner(viewers, access_log=None)
    await runner.setup()
    stack.push_async_callback(runner.cleanup)
    try:
        await web.TCPSite(runner, config.tv.http_bind, config.tv.http_port).start()
    except OSError as exc:
        raise StartupError(
            f"cannot listen for TV on {config.tv.http_bind}:{config.tv.http_port}: {exc.strerror}"
        ) from None
    log.info("tv listening", extra={"address": f"{config.tv.http_bind}:{_site_port(runner, config.tv.http_port)}"})

    admin = web.Application()
    add_tv_status_route(admin, tv, "/status")

    @web.middleware
    async def admin_only(
        request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
    ) -> web.StreamResponse:
        if not (await require_scope(request)).admin:
            raise web.HTTPForbidden(text='{"error": "an admin token is required"}', content_type="application/json")
        return await handler(request)

    admin.middlewares.append(admin_only)
    app.add_subapp("/api/tv", admin)
    add_tv_routes(app, tv, prefix="/iptv")


async def _start_pbx(
    config: GatewayConfig, sip: SipService, cdrs: SqliteCdrStore, app: web.Application, stack: AsyncExitStack
) -> None:
    """The HQ Asterisk over AMI: its call records, click-to-call, and presence for SUBSCRIBE/NOTIFY."""
    from gateway.pbx.api import add_pbx_routes
    from gateway.pbx.cli import ami_secret
    from gateway.pbx.presence import ExtensionState
    from gateway.pbx.service import build_pbx_service
    from gateway.subscriptions import DialogNotifier

    pbx = build_pbx_service(config.pbx, secret=ami_secret(config), node=config.node_name, record_sink=cdrs.write)

    def state_of(exten: str) -> ExtensionState:
        presence = pbx.presence.get(exten)
        return presence.state if presence is not None else ExtensionState.UNKNOWN

    sip.notifier = DialogNotifier(state_of)
    pbx.add_presence_listener(lambda change: sip.presence_changed(change.presence.exten))
    pbx.start()
    stack.push_async_callback(pbx.close)

    async def api_tenant(request: web.Request) -> str | None:
        return (await require_scope(request)).tenant

    add_pbx_routes(app, pbx, api_tenant)


def _site_port(runner: web.AppRunner, configured: int) -> int:
    for address in runner.addresses:
        return int(address[1])
    return configured


async def serve(config: GatewayConfig, config_path: str | Path | None = None) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # SIGHUP re-reads config_path: the tunnel's peers (its trusted list) and routes apply live.
    reloader = ConfigReloader(config_path, config)
    loop.add_signal_handler(signal.SIGHUP, reloader.reload)
    async with AsyncExitStack() as stack:
        gateway = await start_gateway(config, stack, config_path)
        settle_heap()
        reloader.started(gateway.tunnel.service if gateway.tunnel is not None else None)
        log.info(
            "gateway running",
            extra={
                "node": config.node_name,
                "sip_port": gateway.sip.local_port,
                "http_port": gateway.http_port,
                "https_port": gateway.https_port,
            },
        )
        await stop.wait()
        reloader.stopping()
        log.info("stopping: ending calls in progress", extra={"calls": gateway.sip.calls_in_progress})
        grace = config.sip.shutdown_grace_s
        if gateway.workers is not None:
            await asyncio.gather(gateway.sip.drain(grace), gateway.workers.stop(grace))
        else:
            await gateway.sip.drain(grace)
        log.info("stopped")


def run_gateway(config: GatewayConfig, config_path: str | Path | None = None) -> int:
    setup_logging(config.log.level, config.log.format)
    try:
        import uvloop

        uvloop.run(serve(config, config_path))
    except ImportError:
        asyncio.run(serve(config, config_path))
    return 0
