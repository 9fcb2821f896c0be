"""`seabridge billing ...`: import rates, quote, balances, top-ups, rerating, reports, exports."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from billing.errors import BillingError
from billing.rate_sheet import read_rate_sheet, sheet_summary
from billing.rating import Tariff
from billing.rating.tariff import PeriodRule
from billing.tariff_files import TariffBook, load_tariff_file, tariff_to_toml
from gateway.cli import CliError, add_config_option
from gateway.config import GatewayConfig, load_config


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    billing = sub.add_parser("billing", help="rate calls, accounts, exports", description="Billing.")
    actions = billing.add_subparsers(dest="billing_command", metavar="ACTION", required=True)
    _register_import(actions)
    from billing import cli_commands

    cli_commands.register(actions)


def _register_import(actions: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    p = actions.add_parser(
        "import-rates",
        help="turn a carrier rate sheet (CSV) into a tariff",
        description="Read a carrier rate sheet (CSV, docs/billing-rates.md) and write a tariff file.",
    )
    p.add_argument("file", help="the rate sheet, CSV")
    p.add_argument("--tariff", help="name of the new tariff (default: the file's name without .csv)")
    p.add_argument("--base", help="tariff (name or file) whose periods, zone and rounding to use")
    p.add_argument("--delimiter", default=",", help="field separator (default ',')")
    p.add_argument("--replace", action="store_true", help="overwrite an existing tariff file of that name")
    p.add_argument("--dry-run", action="store_true", help="check the sheet, write nothing")
    add_config_option(p)
    p.set_defaults(handler=cmd_import_rates)


def tariff_dir(config: GatewayConfig) -> Path:
    return config.billing.tariff_path(config.data_path)


def load_book(config: GatewayConfig) -> TariffBook:
    try:
        return TariffBook.load(tariff_dir(config))
    except BillingError as exc:
        raise CliError(str(exc)) from None


def _base_tariff(config: GatewayConfig, base: str | None) -> Tariff:
    if base is None:
        return Tariff("base", (PeriodRule("any"),), (), currency=config.billing.currency)
    if base.endswith(".toml") or os.sep in base:
        return load_tariff_file(Path(base))
    tariff = load_book(config).get(base)
    if tariff is None:
        raise CliError(f"no tariff named {base!r} in {tariff_dir(config)}")
    return tariff


def cmd_import_rates(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    path = Path(args.file)
    name = args.tariff or path.stem
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise CliError(f"{path} is not UTF-8 text") from None
    try:
        tariff = read_rate_sheet(text, _base_tariff(config, args.base), name, delimiter=args.delimiter)
    except BillingError as exc:
        raise CliError(f"{path}: {exc}") from None
    destinations, prefixes = sheet_summary(tariff)
    target = tariff_dir(config) / f"{name}.toml"
    if args.dry_run:
        print(f"{path}: {destinations} destinations, {prefixes} prefixes: OK (nothing written)")
        return 0
    if target.exists() and not args.replace:
        raise CliError(f"{target} exists (use --replace to overwrite it)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = target.with_suffix(".toml.tmp")
    tmp.write_text(tariff_to_toml(tariff), encoding="utf-8")
    os.replace(tmp, target)
    print(f"imported {destinations} destinations, {prefixes} prefixes into tariff {name!r} ({target})")
    return 0
