"""The account tree: tenant -> site -> user (or trunk). Ids: 'acme', 'acme/kinshasa', 'alice@acme'."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from billing.errors import AccountError

Level = Literal["tenant", "site", "user"]
Payment = Literal["prepaid", "postpaid"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+-]{0,63}$")
_DOMAIN = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,62})(\.[A-Za-z0-9]([A-Za-z0-9-]{0,62}))*$")


@dataclass(frozen=True)
class Account:
    id: str
    level: Level
    tenant: str
    site: str = ""
    payment: Payment = "postpaid"
    # Micro-units. Postpaid: how far the balance may go below zero (None: no limit).
    # Prepaid accounts spend only their balance.
    credit_limit: int | None = None
    max_concurrent: int | None = None
    max_spend_per_hour: int | None = None  # micro-units, a toll-fraud guard

    @property
    def parent_ids(self) -> tuple[str, ...]:
        if self.level == "user":
            return (site_id(self.tenant, self.site), self.tenant)
        if self.level == "site":
            return (self.tenant,)
        return ()

    @property
    def credit(self) -> int | None:
        """What may be spent beyond the balance; None means unlimited."""
        return 0 if self.payment == "prepaid" else self.credit_limit


def site_id(tenant: str, site: str) -> str:
    return f"{tenant}/{site}"


def check_tenant(tenant: str) -> str:
    if not _DOMAIN.match(tenant):
        raise AccountError(f"{tenant!r} is not a tenant name (a SIP domain like acme)")
    return tenant.lower()


def check_site(site: str) -> str:
    if not _NAME.match(site):
        raise AccountError(f"site {site!r}: use letters, digits, '.', '_', '+' or '-'")
    return site


def parse_account_id(account_id: str) -> tuple[Level, str, str]:
    """'alice@acme' -> ('user', 'acme', ''); 'acme/kinshasa' -> ('site', 'acme', 'kinshasa')."""
    if "@" in account_id:
        name, _, tenant = account_id.partition("@")
        if not _NAME.match(name):
            raise AccountError(f"{account_id!r} is not an account like alice@acme")
        return "user", check_tenant(tenant), ""
    if "/" in account_id:
        tenant, _, site = account_id.partition("/")
        return "site", check_tenant(tenant), check_site(site)
    return "tenant", check_tenant(account_id), ""


def normalise_id(account_id: str) -> str:
    level, tenant, site = parse_account_id(account_id)
    if level == "user":
        return f"{account_id.partition('@')[0]}@{tenant}"
    return site_id(tenant, site) if level == "site" else tenant
