"""Where a dialled number goes: a tenant's dial plan picks a trunk by prefix (longest wins)."""

from __future__ import annotations

from dataclasses import dataclass

from gateway.config import DialRule


@dataclass(frozen=True)
class TrunkRoute:
    trunk: str
    number: str  # what the trunk is asked for, after strip/prepend


def route_number(rules: tuple[DialRule, ...], dialled: str) -> TrunkRoute | None:
    best: DialRule | None = None
    for rule in rules:
        if dialled.startswith(rule.prefix) and len(dialled) > len(rule.prefix):
            if best is None or len(rule.prefix) > len(best.prefix):
                best = rule
    if best is None:
        return None
    return TrunkRoute(best.trunk, best.prepend + dialled[best.strip :])
