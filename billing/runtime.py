"""Build the billing objects from the gateway configuration (for the CLI and the gateway's start-up)."""

from __future__ import annotations

from billing.live.spend import LiveSpend, MemoryLiveSpend, RedisLiveSpend
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
    return BillingService(store, book, config.billing, clock)


def open_live_spend(config: GatewayConfig) -> LiveSpend:
    """Redis when [storage] redis_url is set (several gateways share accounts), else in-process."""
    if config.storage.redis_url:
        return RedisLiveSpend.from_url(config.storage.redis_url)
    return MemoryLiveSpend()
