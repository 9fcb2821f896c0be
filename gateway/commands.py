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
from gateway.tokens import TokenError, TokenStore
from gateway.users import SqliteUserStore, UserError, make_user, parse_address


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    run = sub.add_parser("run", help="start the gateway", description="Start the gateway in the foreground.")
    add_config_option(run)
    run.set_defaults(handler=cmd_run)

    worker = sub.add_parser(
        "sip-worker",
        help="an extra SIP worker (started by `seabridge run` when [sip] workers > 1)",
        description="An extra SIP worker process. `seabridge run` starts these itself when [sip] workers > 1; "
        "they share its SIP port and stop when it stops.",
    )
    add_config_option(worker)
    worker.add_argument("--index", type=int, required=True, help="this worker's number (1..count-1)")
    worker.add_argument("--count", type=int, required=True, help="SIP workers in all, the gateway included")
    worker.add_argument("--run", required=True, help="the gateway's run id (names the links between workers)")
    worker.add_argument("--udp-port", type=int, required=True, help="the gateway's SIP UDP port, shared")
    worker.add_argument(
        "--stream-port", action="append", default=[], metavar="TRANSPORT:PORT", help="a TCP/TLS port to advertise"
    )
    worker.add_argument("--webrtc-agent", default="", metavar="HOST:PORT", help="the browser phone's SIP agent")
    worker.set_defaults(handler=cmd_sip_worker)

    user = sub.add_parser("user", help="manage users", description="Add, list and remove users.")
    user_sub = user.add_subparsers(dest="user_command", metavar="ACTION", required=True)

    add = user_sub.add_parser("add", help="add a user", description="Add a user of a tenant at a site.")
    add.add_argument("address", help="user address, e.g. alice@acme (tenant = SIP domain)")
    add.add_argument("--site", required=True, help="site the user belongs to, e.g. kinshasa")
    add.add_argument("--password", help="SIP password (asked for when omitted; '-' reads a line from stdin)")
    add.add_argument("--number", help="a number (extension) that reaches the user, e.g. 2001")
    add_config_option(add)
    add.set_defaults(handler=cmd_user_add)

    ls = user_sub.add_parser("list", help="list users", description="List users, optionally of one tenant.")
    ls.add_argument("--tenant", help="only users of this tenant (SIP domain)")
    add_config_option(ls)
    ls.set_defaults(handler=cmd_user_list)

    rm = user_sub.add_parser(
        "remove",
        help="remove a user",
        description="Remove a user. A running gateway refuses the user's new calls within 0.1 s.",
    )
    rm.add_argument("address", help="user address, e.g. alice@acme")
    add_config_option(rm)
    rm.set_defaults(handler=cmd_user_remove)

    register_token_commands(sub)


def register_token_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    token = sub.add_parser("token", help="manage HTTP API tokens", description="Create, list and revoke API tokens.")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)
    create = token_sub.add_parser(
        "create", help="create a token", description="Create an API token and print it (shown once)."
    )
    who = create.add_mutually_exclusive_group(required=True)
    who.add_argument("--admin", action="store_true", help="a token that sees every tenant")
    who.add_argument("--tenant", help="a token that sees only this tenant (SIP domain)")
    create.add_argument("--label", default="", help="a note saying what the token is for")
    add_config_option(create)
    create.set_defaults(handler=cmd_token_create)
    ls = token_sub.add_parser("list", help="list tokens", description="List tokens (never their secrets).")
    add_config_option(ls)
    ls.set_defaults(handler=cmd_token_list)
    revoke = token_sub.add_parser("revoke", help="revoke a token", description="Revoke a token by its id.")
    revoke.add_argument("id", help="the token id (the part after sbt_)")
    add_config_option(revoke)
    revoke.set_defaults(handler=cmd_token_revoke)


def cmd_token_create(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tenant = None if args.admin else config.tenant_for_domain(args.tenant)
    token = _with_tokens(config, lambda store: store.create(tenant, args.label))
    print(token)
    print(f"scope: {'all tenants (admin)' if tenant is None else 'tenant ' + tenant}", file=sys.stderr)
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    tokens = _with_tokens(config, lambda store: store.list())
    if not tokens:
        print("no tokens")
    for t in tokens:
        state = f"revoked {t.revoked_at}" if t.revoked_at else "active"
        print(f"{t.id}  {t.tenant or '(admin)'}  {state}  {t.label}")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    _with_tokens(config, lambda store: store.revoke(args.id.removeprefix("sbt_").split("_")[0]))
    print(f"revoked {args.id}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from gateway.app import run_gateway

    config = load_config(args.config)
    try:
        return run_gateway(config, args.config)
    except StartupError as exc:
        raise CliError(str(exc)) from None
    except OSError as exc:
        # A data_dir we cannot write, a certificate we cannot read: the operator can fix these.
        raise CliError(f"{exc.strerror or exc}: {exc.filename}" if exc.filename else str(exc)) from None


def cmd_sip_worker(args: argparse.Namespace) -> int:
    from gateway.sip_workers import run_worker

    config = load_config(args.config)
    if not 1 <= args.index < args.count or args.count != config.sip.workers:
        raise CliError(f"worker {args.index} of {args.count} does not match sip.workers = {config.sip.workers}")
    try:
        return run_worker(config, args)
    except StartupError as exc:
        raise CliError(str(exc)) from None


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


def _with_db(config: GatewayConfig, action):  # type: ignore[no-untyped-def]
    """Run ``action(db)`` against the gateway's database; user and token errors become CLI errors."""
    db = open_gateway_db(config)
    try:
        return asyncio.run(action(db))
    except (UserError, TokenError) as exc:
        raise CliError(str(exc)) from None
    finally:
        db.close()


def _with_users(config: GatewayConfig, action):  # type: ignore[no-untyped-def]
    return _with_db(config, lambda db: action(SqliteUserStore(db)))


def _with_tokens(config: GatewayConfig, action):  # type: ignore[no-untyped-def]
    return _with_db(config, lambda db: action(TokenStore(db)))


def cmd_user_add(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        username, tenant = parse_address(args.address)
        user = make_user(f"{username}@{config.tenant_for_domain(tenant)}", args.site, _read_password(args), args.number)
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
    print(f"{'USER':<{width}}  {'SITE':<12}  NUMBER")
    for u in users:
        print(f"{u.aor:<{width}}  {u.site:<12}  {u.number or ''}".rstrip())
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
