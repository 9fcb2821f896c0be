"""The gateway's HTTP server: health, metrics, and the routes other packages add."""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from gateway.metrics_merge import merge_exposition

REGISTRY = web.AppKey("registry", CollectorRegistry)
HEALTH_CHECKS = web.AppKey("health_checks", dict)
# Async callables run before each scrape, for values that need I/O to read (relay workers).
METRICS_REFRESH = web.AppKey("metrics_refresh", list)
# Async callables returning other processes' exposition text, as (worker label, text) pairs.
METRICS_FROM_WORKERS = web.AppKey("metrics_from_workers", list)
STARTED_AT = web.AppKey("started_at", float)

HealthCheck = Callable[[], Awaitable[dict[str, Any]]]


def create_app(registry: CollectorRegistry) -> web.Application:
    app = web.Application(client_max_size=2 * 1024 * 1024)
    app[REGISTRY] = registry
    app[HEALTH_CHECKS] = {}
    app[METRICS_REFRESH] = []
    app[METRICS_FROM_WORKERS] = []
    app[STARTED_AT] = time.monotonic()
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)
    return app


def add_health_check(app: web.Application, name: str, check: HealthCheck) -> None:
    app[HEALTH_CHECKS][name] = check


async def health(request: web.Request) -> web.Response:
    checks: dict[str, HealthCheck] = request.app[HEALTH_CHECKS]
    body: dict[str, Any] = {"status": "ok", "uptime_s": round(time.monotonic() - request.app[STARTED_AT], 1)}
    for name, check in checks.items():
        try:
            body[name] = await check()
        except Exception as exc:  # a failing component makes the gateway unhealthy, not the endpoint
            body[name] = {"status": "error", "error": str(exc)}
            body["status"] = "degraded"
    status = 200 if body["status"] == "ok" else 503
    return web.Response(text=json.dumps(body), status=status, content_type="application/json")


async def metrics(request: web.Request) -> web.Response:
    for refresh in request.app[METRICS_REFRESH]:
        await refresh()
    data = generate_latest(request.app[REGISTRY])
    others = [pair for fetch in request.app[METRICS_FROM_WORKERS] for pair in await fetch()]
    if others:
        data = merge_exposition(data.decode(), others)
    return web.Response(body=data, headers={"Content-Type": CONTENT_TYPE_LATEST})
