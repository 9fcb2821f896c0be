"""A stand-in for a gateway process with one call in progress, to be killed with SIGKILL by a test.

Answers one call, runs the live-billing timer with the real clock and prints
"checkpoint <µs>" each time a checkpoint is committed; it never ends the call.
"""

from __future__ import annotations

import asyncio
import sys
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

from billing.config import BillingConfig
from billing.live.controller import LiveBilling
from billing.live.spend import MemoryLiveSpend
from billing.service import BillingService
from billing.store.open import open_store
from billing.tariff_files import TariffBook
from tests.billing.records import call
from tests.billing.tariffs import flat


async def main(db: Path, session_id: str) -> None:
    store = await open_store("sqlite", sqlite_path=db)
    config = BillingConfig(checkpoint_interval_s=1, grant_s=60, renew_before_s=10)
    service = BillingService(store, TariffBook({"flat": flat("0.60", 1)}), config)
    live = LiveBilling(service, MemoryLiveSpend(), "kinshasa-gw")
    record = replace(call(datetime.now(UTC), 0, session_id=session_id), end=datetime.now(UTC))
    auth = await live.call_answered(record)
    print(f"answered {auth.allowed} {auth.max_duration_s}", flush=True)
    original = store.checkpoint

    async def reporting(points):  # type: ignore[no-untyped-def]
        await original(points)
        print(f"checkpoint {points[0][3]}", flush=True)

    store.checkpoint = reporting  # type: ignore[method-assign]
    live.start()
    await asyncio.Event().wait()


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1]), sys.argv[2]))
