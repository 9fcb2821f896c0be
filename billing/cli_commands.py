"""`seabridge billing account|plan|quote|balance|topup|rerate|report|export`."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from billing.errors import BillingError
from billing.exports import FORMATS, TenantMonth, export_lines, month_reports, pdf_invoices
from billing.rating import explain
from billing.rating.money import format_money
from billing.rating.tariff import CATEGORIES
from billing.report import MonthReport
from billing.runtime import open_billing
from billing.service import BillingService
from billing.timeutil import month_bounds, to_us
from gateway.cli import CliError, add_config_option
from gateway.config import GatewayConfig, load_config

T = TypeVar("T")
Actions = argparse._SubParsersAction  # noqa: SLF001 - argparse has no public name for it


def _amount(text: str) -> Decimal:
    try:
        value = Decimal(text)
    except InvalidOperation:
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount like 10.50") from None
    if not value.is_finite():
        raise argparse.ArgumentTypeError(f"{text!r} is not an amount like 10.50")
    return value


def _instant(text: str) -> datetime:
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a time like 2026-10-05T18:30:00+08:00") from None
    if value.tzinfo is None:
        raise argparse.ArgumentTypeError(f"{text!r}: give the UTC offset, e.g. 2026-10-05T18:30:00+08:00")
    return value.astimezone(UTC)


def _month(text: str) -> str:
    try:
        month_bounds(text, "UTC")
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return text


def _run(args: argparse.Namespace, action: Callable[[BillingService, GatewayConfig], Awaitable[T]]) -> T:
    config = load_config(args.config)

    async def main() -> T:
        service = await open_billing(config)
        try:
            return await action(service, config)
        finally:
            await service.store.close()

    try:
        return asyncio.run(main())
    except BillingError as exc:
        raise CliError(str(exc)) from None


def _money(micros: int | None, currency: str) -> str:
    return "unlimited" if micros is None else f"{format_money(micros)} {currency}"


def register(actions: Actions[argparse.ArgumentParser]) -> None:
    def add(name: str, help_text: str, handler: Callable[[argparse.Namespace], int]) -> argparse.ArgumentParser:
        p = actions.add_parser(name, help=help_text, description=help_text[0].upper() + help_text[1:] + ".")
        add_config_option(p)
        p.set_defaults(handler=handler)
        return p

    p = add("account", "add or change an account (tenant, site, user or trunk)", cmd_account)
    p.add_argument("account", help="alice@acme (user or trunk), acme/kinshasa (site) or acme (tenant)")
    p.add_argument("--site", help="site of a user or trunk account")
    pay = p.add_mutually_exclusive_group()
    pay.add_argument("--prepaid", dest="payment", action="store_const", const="prepaid", help="spends its balance")
    pay.add_argument("--postpaid", dest="payment", action="store_const", const="postpaid", help="billed monthly")
    p.add_argument("--credit-limit", type=_amount, help="postpaid: how far the balance may go below zero")
    p.add_argument("--max-concurrent", type=int, help="most calls at once (this account and below)")
    p.add_argument("--max-spend-per-hour", type=_amount, help="toll-fraud guard: most spent in any hour")

    p = add("accounts", "list accounts", cmd_accounts)
    p.add_argument("--tenant")

    p = add("plan", "give an account a tariff from a date on", cmd_plan)
    p.add_argument("account")
    p.add_argument("tariff")
    p.add_argument("--from", dest="start", type=_instant, help="activation (default: now), e.g. 2026-11-01T00:00+08:00")

    p = add("quote", "what would a call cost, and why", cmd_quote)
    p.add_argument("--account", required=True)
    p.add_argument("--to", required=True, help="dialled number, e.g. +8613800000000")
    p.add_argument("--start", required=True, type=_instant, help="answer time, e.g. 2026-10-05T18:30:00+08:00")
    p.add_argument("--duration", required=True, type=float, help="seconds of talk")
    p.add_argument("--category", default="voice", choices=CATEGORIES)

    p = add("balance", "show an account's balance, credit and recent spend", cmd_balance)
    p.add_argument("account")

    p = add("topup", "credit an account (idempotent with --reference)", cmd_topup)
    p.add_argument("account")
    p.add_argument("amount", type=_amount)
    p.add_argument("--reference", help="payment reference; the same reference is never credited twice")
    p.add_argument("--note", default="")

    p = add("rerate", "rate calls again with today's tariffs and plans", cmd_rerate)
    p.add_argument("--month", type=_month, help="calls that started in this month (tenant's zone)")
    p.add_argument("--tenant")
    p.add_argument("--unrated", action="store_true", help="only calls that could not be rated")

    p = add("report", "monthly totals per site and category, and unrated calls", cmd_report)
    p.add_argument("--month", type=_month, required=True)
    p.add_argument("--tenant")

    p = add("export", "export a month: detailed CSV, Asterisk Master.csv or PDF invoices", cmd_export)
    p.add_argument("--month", type=_month, required=True)
    p.add_argument("--tenant")
    p.add_argument("--format", choices=FORMATS, required=True)
    p.add_argument("--output", required=True, help="file to write ('-' for standard output)")


def cmd_account(args: argparse.Namespace) -> int:
    async def go(service: BillingService, _config: GatewayConfig) -> None:
        account = await service.ensure_account(
            args.account,
            site=args.site,
            payment=args.payment,
            credit_limit=args.credit_limit,
            max_concurrent=args.max_concurrent,
            max_spend_per_hour=args.max_spend_per_hour,
            replace_existing=True,
        )
        print(f"{account.id}: {account.level}, {account.payment}, tenant {account.tenant}"
              + (f", site {account.site}" if account.site else ""))  # fmt: skip

    _run(args, go)
    return 0


def cmd_accounts(args: argparse.Namespace) -> int:
    async def go(service: BillingService, _config: GatewayConfig) -> None:
        accounts = await service.store.list_accounts(args.tenant)
        if not accounts:
            print("no accounts")
        for a in accounts:
            limits = [f"credit limit {format_money(a.credit_limit)}" if a.credit_limit is not None else ""]
            limits += [f"max {a.max_concurrent} calls" if a.max_concurrent is not None else ""]
            limits += [f"max {format_money(a.max_spend_per_hour)}/h" if a.max_spend_per_hour is not None else ""]
            print(f"{a.id:<32} {a.level:<6} {a.payment:<8} {', '.join(x for x in limits if x)}")

    _run(args, go)
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    async def go(service: BillingService, _config: GatewayConfig) -> None:
        start = args.start or service.clock()
        await service.set_plan(args.account, args.tariff, start)
        print(f"{args.account}: tariff {args.tariff} from {start.isoformat()}")

    _run(args, go)
    return 0


def cmd_quote(args: argparse.Namespace) -> int:
    if args.duration < 0:
        raise CliError("--duration must not be negative")

    async def go(service: BillingService, _config: GatewayConfig) -> None:
        call, tariff = await service.quote(
            args.account, args.to, args.category, args.start, timedelta(seconds=args.duration)
        )
        print(f"A {args.duration:g} s {args.category} call from {args.account} to {args.to} costs "
              f"{call.cost} {call.currency}.")  # fmt: skip
        for line in explain(call, tariff):
            print(line)

    _run(args, go)
    return 0


def cmd_balance(args: argparse.Namespace) -> int:
    async def go(service: BillingService, config: GatewayConfig) -> None:
        b = await service.balance(args.account)
        cur = config.billing.currency
        a = b.account
        print(f"account:    {a.id} ({a.level}, {a.payment})")
        print(f"balance:    {_money(b.balance, cur)}")
        if a.payment == "postpaid":
            print(f"credit:     {_money(a.credit_limit, cur)}")
        print(f"available:  {_money(b.available, cur)}")
        print(
            f"last hour:  {_money(b.spent_last_hour, cur)} spent"
            + (f" (limit {_money(a.max_spend_per_hour, cur)})" if a.max_spend_per_hour is not None else "")
        )

    _run(args, go)
    return 0


def cmd_topup(args: argparse.Namespace) -> int:
    async def go(service: BillingService, config: GatewayConfig) -> None:
        done = await service.topup(args.account, args.amount, args.reference, args.note)
        b = await service.balance(args.account)
        state = "credited" if done else "already credited (same reference): nothing changed"
        print(f"{args.account}: {args.amount} {config.billing.currency} {state}; "
              f"balance {_money(b.balance, config.billing.currency)}")  # fmt: skip

    _run(args, go)
    return 0


async def _tenants(service: BillingService, config: GatewayConfig, tenant: str | None) -> list[TenantMonth]:
    names = [config.tenant_for_domain(tenant)] if tenant else await service.store.tenants()
    return [TenantMonth(name, config.tenant_timezone(name)) for name in names]


def cmd_rerate(args: argparse.Namespace) -> int:
    async def go(service: BillingService, config: GatewayConfig) -> None:
        windows: list[tuple[str | None, datetime | None, datetime | None]] = []
        if args.month:
            for t in await _tenants(service, config, args.tenant):
                first, after = month_bounds(args.month, t.zone)
                windows.append((t.tenant, first, after))
        else:
            windows.append((config.tenant_for_domain(args.tenant) if args.tenant else None, None, None))
        cur = config.billing.currency
        for tenant, start, end in windows:
            r = await service.rerate(tenant=tenant, start=start, end=end, only_unrated=args.unrated)
            who = tenant or "all tenants"
            print(f"{who}: {r.calls} calls rerated ({r.rated} rated, {r.unrated} unrated); "
                  f"charged {_money(r.charged_before, cur)} before, {_money(r.charged_after, cur)} "
                  "now")  # fmt: skip

    _run(args, go)
    return 0


def _print_report(report: MonthReport, target: Decimal) -> None:
    cur = report.currency
    t = report.total
    print(f"{report.tenant} {report.month} ({report.zone})")
    print(f"  {'site':<16} {'category':<9} {'calls':>7} {'minutes':>10} {'amount':>12}")
    for (site, category), s in sorted(report.by_site_category.items()):
        print(f"  {site:<16} {category:<9} {s.calls:>7} {s.minutes:>10.2f} {format_money(s.charged):>12}")
    print(f"  {'total':<26} {t.calls:>7} {t.minutes:>10.2f} {format_money(t.charged):>12} {cur}")
    average = t.per_minute()
    if average is not None:
        verdict = "within" if average <= target else "ABOVE"
        print(f"  average {average} {cur}/min ({verdict} the {target} target)")
    print(f"  unrated calls: {report.unrated}")
    for session, account, reason in report.unrated_examples:
        print(f"    {session} {account}: {reason}")


def cmd_report(args: argparse.Namespace) -> int:
    async def go(service: BillingService, config: GatewayConfig) -> None:
        tenants = await _tenants(service, config, args.tenant)
        for report in await month_reports(service.store, tenants, args.month):
            _print_report(report, config.billing.target_per_minute)

    _run(args, go)
    return 0


class _Bar:
    """A rich progress bar on a terminal; silent otherwise (CI, pipes)."""

    def __init__(self, total: int) -> None:
        self._progress: Any = None
        if sys.stderr.isatty():
            from rich.progress import Progress

            self._progress = Progress(transient=True, console=__import__("rich.console").console.Console(stderr=True))
            self._task = self._progress.add_task("exporting", total=total)
            self._progress.start()

    def advance(self, n: int) -> None:
        if self._progress is not None:
            self._progress.advance(self._task, n)

    def close(self) -> None:
        if self._progress is not None:
            self._progress.stop()


def cmd_export(args: argparse.Namespace) -> int:
    async def go(service: BillingService, config: GatewayConfig) -> int:
        tenants = await _tenants(service, config, args.tenant)
        total = 0
        for t in tenants:
            start, end = month_bounds(args.month, t.zone)
            total += await service.store.count_calls(tenant=t.tenant, start_us=to_us(start), end_us=to_us(end))
        bar = _Bar(total)
        out_path = None if args.output == "-" else Path(args.output)
        tmp = out_path.with_name(out_path.name + ".part") if out_path else None
        try:
            with tmp.open("wb") if tmp else os.fdopen(os.dup(sys.stdout.fileno()), "wb") as out:
                if args.format == "pdf":
                    reports = await month_reports(service.store, tenants, args.month, bar.advance)
                    out.write(await asyncio.to_thread(pdf_invoices, reports, config.billing.target_per_minute))
                else:
                    async for chunk in export_lines(service.store, tenants, args.month, args.format, bar.advance):
                        out.write(chunk)
        finally:
            bar.close()
        if tmp and out_path:
            os.replace(tmp, out_path)
            print(f"wrote {out_path} ({total} calls, {len(tenants)} tenants)", file=sys.stderr)
        return 0

    return _run(args, go)
