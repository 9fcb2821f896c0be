"""Gateway subcommands: run, user."""

from __future__ import annotations

import argparse
import asyncio
import getpass
import sys

from gateway.cli import CliError, add_config_option
from gateway.config import GatewayConfig, load_config
from gateway.errors import StartupError
from gateway.storage.gateway_db import open_gateway_db
from gateway.users import SqliteUserStore, UserError, make_user, parse_address


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="start the gateway", description="Start the gateway in the foreground.")
    add_config_option(run)
    run.set_defaults(handler=cmd_run)

    user = sub.add_parser("user", help="manage users", description="Add, list and remove users.")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = user_sub.add_parser("add", help="add a user", description="Add a user of a tenant at a site.")
    add.add_argument("address", help="user address, e.g. alice@acme (tenant = SIP domain)")
    add.add_argument("--site", required=True, help="site the user belongs to, e.g. kinshasa")
    add.add_argument("--password", help="SIP password (asked for when omitted; '-' reads a line from stdin)")
    add_config_option(add)
    add.set_defaults(handler=cmd_user_add)

    ls = user_sub.add_parser("list", help="list users", description="List users, optionally of one tenant.")
    ls.add_argument("--tenant", help="only users of this tenant (SIP domain)")
    add_config_option(ls)
    ls.set_defaults(handler=cmd_user_list)

    rm = user_sub.add_parser("remove", help="remove a user", description="Remove a user.")
    rm.add_argument("address", help="user address, e.g. alice@acme")
    add_config_option(rm)
    rm.set_defaults(handler=cmd_user_remove)


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run_gateway

    config = load_config(args.config)
    try:
        return run_gateway(config)
    except StartupError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        # A data_dir we cannot write, a certificate we cannot read: the operator can fix these.
        raise CliError(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def _read_password(args: argparse.Namespace) -> str:
    if args.password == "-":
        return sys.stdin.readline().rstrip("\n")
    if args.password:
        return str(args.password)
    if not sys.stdin.isatty():
        raise CliError("--password is required when not on a terminal (use '-' to read it from stdin)")
    first = getpass.getpass("Password: ")
    if first != getpass.getpass("Repeat password: "):
        raise CliError("passwords do not match")
    return first


def _with_users(config: GatewayConfig, action):  # type: ignore[no-untyped-def]
    db = open_gateway_db(config)
    try:
        return asyncio.run(action(SqliteUserStore(db)))
    except UserError as exc:
        raise CliError(str(exc)) from None
    finally:
        db.close()


def cmd_user_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        username, tenant = parse_address(args.address)
        user = make_user(f"{username}@{config.tenant_for_domain(tenant)}", args.site, _read_password(args))
    except UserError as exc:
        raise CliError(str(exc)) from None
    _with_users(config, lambda store: store.add(user))
    print(f"added {user.aor} at site {user.site}")
    return 0


def cmd_user_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tenant = config.tenant_for_domain(args.tenant) if args.tenant else None
    users = _with_users(config, lambda store: store.list(tenant))
    if not users:
        print("no users")
        return 0
    width = max(len(u.aor) for u in users)
    print(f"{'USER':<{width}}  SITE")
    for u in users:
        print(f"{u.aor:<{width}}  {u.site}")
    return 0


def cmd_user_remove(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        username, tenant = parse_address(args.address)
    except UserError as exc:
        raise CliError(str(exc)) from None
    _with_users(config, lambda store: store.remove(config.tenant_for_domain(tenant), username))
    print(f"removed {username}@{tenant}")
    return 0
