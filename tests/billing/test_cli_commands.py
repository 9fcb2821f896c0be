"""The billing commands as an operator types them, against a real SQLite store under data_dir."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.billing.test_cli_import import REPO, seabridge


@pytest.fixture
def gateway(tmp_path: Path) -> Path:
    tariffs = tmp_path / "tariffs"
    tariffs.mkdir()
    (tariffs / "acme.toml").write_bytes((REPO / "config/tariffs/acme-standard.toml").read_bytes())
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n[billing]\ntariff_dir = "{tariffs}"\n')
    return config


def run(config: Path, *args: str) -> str:
    done = seabridge("billing", *args, "-c", str(config), cwd=config.parent)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_accounts_plans_topups_and_quotes(gateway: Path) -> None:
    assert "alice@acme: user, prepaid, tenant acme, site kinshasa" in run(
        gateway, "account", "alice@acme", "--site", "kinshasa"
    )
    run(gateway, "plan", "acme", "acme-standard", "--from", "2026-01-01T00:00:00+08:00")
    out = run(gateway, "quote", "--account", "alice@acme", "--to", "+861012345678",
              "--start", "2026-10-05T18:30:00+08:00", "--duration", "125")  # fmt: skip
    assert out.startswith("A 125 s voice call from alice@acme to +861012345678 costs 0.38 CNY.")
    assert "destination China (prefix 86)" in out
    assert "peak" in out and "rounded half up to 2 decimals: 0.38 CNY" in out
    assert "credited" in run(gateway, "topup", "alice@acme", "20", "--reference", "bank-42")
    assert "already credited" in run(gateway, "topup", "alice@acme", "20", "--reference", "bank-42")
    balance = run(gateway, "balance", "alice@acme")
    assert "balance:    20.00 CNY" in balance and "available:  20.00 CNY" in balance
    accounts = run(gateway, "accounts")
    assert "acme/kinshasa" in accounts and "alice@acme" in accounts


def test_user_errors_are_one_line(gateway: Path) -> None:
    done = seabridge("billing", "balance", "nobody@acme", "-c", str(gateway), cwd=gateway.parent)
    assert (done.returncode, done.stderr) == (2, "seabridge: error: no account nobody@acme\n")
    done = seabridge("billing", "quote", "--account", "x@acme", "--to", "1", "--start", "2026-10-05T18:30",
                     "--duration", "1", "-c", str(gateway), cwd=gateway.parent)  # fmt: skip
    assert done.returncode == 2 and "give the UTC offset" in done.stderr


def test_report_and_rerate_of_a_month(gateway: Path) -> None:
    import asyncio
    from datetime import UTC, datetime

    from billing.runtime import open_billing
    from gateway.config import load_config
    from tests.billing.records import call

    async def calls() -> None:
        service = await open_billing(load_config(gateway))
        try:
            await service.ensure_account("alice@acme", site="kinshasa", payment="postpaid")
            await service.call_ended(call(datetime(2026, 10, 5, 10, 30, tzinfo=UTC), 125, to="sip:+861012345678@gw"))
        finally:
            await service.store.close()

    asyncio.run(calls())
    report = run(gateway, "report", "--month", "2026-10")
    assert "unrated calls: 1" in report and "no rate plan for alice@acme" in report
    run(gateway, "plan", "acme", "acme-standard", "--from", "2026-01-01T00:00:00+08:00")
    rerate = run(gateway, "rerate", "--month", "2026-10", "--unrated")
    assert "acme: 1 calls rerated (1 rated, 0 unrated); charged 0.00 CNY before, 0.38 CNY now" in rerate
    report = run(gateway, "report", "--month", "2026-10", "--tenant", "acme")
    assert "unrated calls: 0" in report and "0.38 CNY" in report
    assert "average 0.1824 CNY/min (within the 0.2 target)" in report


def test_start_billing_creates_trunk_accounts_and_recovers(tmp_path: Path) -> None:
    import asyncio

    from billing.runtime import start_billing
    from gateway.config import parse_config

    config = parse_config(
        {
            "data_dir": str(tmp_path / "var"),
            "node_name": "beijing-gw",
            "billing": {"trunks": [{"trunk": "hq-pbx", "account": "hq-pbx@acme", "site": "beijing"}]},
        }
    )

    async def go() -> None:
        runtime = await start_billing(config)
        try:
            trunk = await runtime.service.account("hq-pbx@acme")
            assert (trunk.level, trunk.site, trunk.payment) == ("user", "beijing", "postpaid")
            assert config.billing.account_for_trunk("hq-pbx") == "hq-pbx@acme"
            assert runtime.recovered == []
        finally:
            await runtime.stop()

    asyncio.run(go())
