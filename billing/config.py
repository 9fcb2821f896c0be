"""The ``[billing]`` section of the gateway configuration.

Where the data lives (SQLite under data_dir, or PostgreSQL, and Redis for live
spend) is the gateway's ``[storage]`` section, shared with the other packages.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Literal

from gateway.configschema import InvalidField, bounds

_ACCOUNT = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}@[A-Za-z0-9.-]{1,253}$")


@dataclass(frozen=True)
class TrunkAccountConfig:
    """Calls that enter from ``trunk`` are charged to ``account`` (a leaf account at ``site``)."""

    trunk: str
    account: str
    site: str

    def __post_init__(self) -> None:
        if not _ACCOUNT.match(self.account):
            raise InvalidField("account", f"{self.account!r} is not an account id like hq-pbx@acme")


@dataclass(frozen=True)
class BillingConfig:
    enabled: bool = True
    # Directory of tariff files (*.toml); empty means <data_dir>/tariffs.
    tariff_dir: str = ""
    currency: str = "CNY"
    # Tariff for accounts (and their ancestors) with no rate plan; empty means "none": such calls are unrated.
    default_tariff: str = ""
    # New accounts: prepaid start with nothing to spend, so a forgotten account is refused, not free.
    default_payment: Literal["prepaid", "postpaid"] = "prepaid"
    # Credit limit of new postpaid user accounts; unset means no limit (the tree above may still have one).
    default_credit_limit: Decimal | None = None
    # Dialled numbers: strip this international prefix (and a leading '+') before prefix matching.
    international_prefix: str = "00"
    # Live control.
    max_call_duration_s: int = field(default=4 * 3600, metadata=bounds(60, 7 * 86400))
    # Credit is reserved in slices of this many seconds of talk, so one call does not hold a shared balance.
    grant_s: int = field(default=300, metadata=bounds(10, 86400))
    # A slice is renewed this long before it runs out.
    renew_before_s: int = field(default=30, metadata=bounds(1, 3600))
    # Open calls are written to the database this often, so a crash loses at most this much talk time.
    checkpoint_interval_s: int = field(default=10, metadata=bounds(1, 3600))
    # The B2BUA is told to hang up this much before the paid time ends, so signalling
    # latency never bills one more increment.
    cutoff_guard_ms: int = field(default=500, metadata=bounds(0, 10000))
    # The leg the ingress gateway rates (the caller's side of its B2BUA); other legs are kept for audit.
    rated_leg: str = "a"
    # Allow calls that cannot be rated (no plan, no rate) at set-up; they are stored unrated either way.
    # Let calls through that cannot be rated yet (no tariff or plan): they are kept, flagged as
    # unrated and charged when the tariff is fixed. False: refuse them at set-up.
    authorize_unrated: bool = True
    # The tunnel node (HQ) every rating run is replicated to, store-and-forward; "" = none.
    replicate_to: str = ""
    # The promise to customers, shown on invoices.
    target_per_minute: Decimal = Decimal("0.2")
    trunks: tuple[TrunkAccountConfig, ...] = ()

    def __post_init__(self) -> None:
        if self.renew_before_s >= self.grant_s:
            raise InvalidField("renew_before_s", "must be shorter than grant_s")
        if self.default_credit_limit is not None and self.default_credit_limit < 0:
            raise InvalidField("default_credit_limit", "must not be negative")
        if not re.fullmatch(r"[A-Z]{3}", self.currency):
            raise InvalidField("currency", f"{self.currency!r} is not an ISO 4217 code like CNY")
        if not re.fullmatch(r"[0-9]*", self.international_prefix):
            raise InvalidField("international_prefix", "must be digits")
        names = [t.trunk for t in self.trunks]
        if len(names) != len(set(names)):
            raise InvalidField("trunks", "a trunk is listed twice")

    def tariff_path(self, data_dir: Path) -> Path:
        return Path(self.tariff_dir) if self.tariff_dir else data_dir / "tariffs"

    def account_for_trunk(self, trunk: str) -> str | None:
        for t in self.trunks:
            if t.trunk == trunk:
                return t.account
        return None
