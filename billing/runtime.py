"""Build the billing objects from the gateway configuration (for the CLI and the gateway's start-up)."""

from __future__ import annotations

from dataclasses import dataclass

from billing.live.controller import LiveBilling
from billing.live.spend import LiveSpend, MemoryLiveSpend, RedisLiveSpend
from billing.records import Rating
from billing.service import BillingService, Clock, utc_now
from billing.store.open import open_store
from billing.tariff_files import TariffBook
from gateway.config import GatewayConfig


async def open_billing(config: GatewayConfig, clock: Clock = utc_now) -> BillingService:
    """The store ([storage]: SQLite under data_dir, or PostgreSQL) and the tariffs ([billing] tariff_dir)."""
    storage = config.storage
    if storage.backend == "postgresql":
        store = await open_store("postgresql", postgres_dsn=storage.postgres_dsn)
    else:
        store = await open_store("sqlite", sqlite_path=config.data_path / "billing.db")
    book = TariffBook.load(config.billing.tariff_path(config.data_path))
    service = BillingService(store, book, config.billing, clock)
    await service.ensure_trunk_accounts()
    return service


def open_live_spend(config: GatewayConfig) -> LiveSpend:
    """Redis when [storage] redis_url is set (several gateways share accounts), else in-process."""
    if config.storage.redis_url:
        return RedisLiveSpend.from_url(config.storage.redis_url)
    return MemoryLiveSpend()


@dataclass
class BillingRuntime:
    """What the gateway holds while it runs: the service (ratings, money) and live control."""

    service: BillingService
    live: LiveBilling
    recovered: list[Rating]

    async def stop(self) -> None:
        await self.live.stop()
        await self.live.spend.aclose()
        await self.service.store.close()


async def start_billing(config: GatewayConfig, clock: Clock = utc_now, recover: bool = True) -> BillingRuntime:
    """Open the store, close calls a crash left open (at their last checkpoint), start the live timer.

    ``recover=False`` for extra SIP workers: the node's open calls are theirs and live.
    """
    service = await open_billing(config, clock)
    live = LiveBilling(service, open_live_spend(config), config.node_name)
    recovered = await live.recover() if recover else []
    live.start()
    return BillingRuntime(service, live, recovered)
