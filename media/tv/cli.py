"""`seabridge tv ...`: viewing tokens and the channel lineup."""

from __future__ import annotations

import argparse
import time
from datetime import UTC, datetime

from gateway.cli import CliError, add_config_option
from gateway.config import GatewayConfig, load_config
from media.tv.config import ChannelConfig
from media.tv.timeshift import SHIFT_MARGIN_SEGMENTS, channel_shifts, shift_label, zone_offset
from media.tv.tokenstore import TokenStore, TokenStoreError


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    tv = sub.add_parser("tv", help="TV channels and viewing tokens", description="TV channels and viewing tokens.")
    tv_sub = tv.add_subparsers(dest="tv_command", metavar="ACTION", required=True)

    token = tv_sub.add_parser("token", help="viewing tokens", description="Create, revoke and list viewing tokens.")
    token_sub = token.add_subparsers(dest="token_command", metavar="ACTION", required=True)

    create = token_sub.add_parser(
        "create",
        help="create a token for a tenant",
        description="Create a signed, expiring viewing token; its URLs open the tenant's channels.",
    )
    create.add_argument("--tenant", required=True, help="tenant (SIP domain), e.g. acme")
    create.add_argument("--days", type=int, help="validity in days (default: tv.token_days, 30)")
    add_config_option(create)
    create.set_defaults(handler=cmd_token_create)

    revoke = token_sub.add_parser(
        "revoke",
        help="revoke a token",
        description="Revoke a token (by the token itself or its id); playback stops within a segment.",
    )
    revoke.add_argument("token", metavar="TOKEN-or-ID", help="the token, or its 16-digit id from 'token list'")
    add_config_option(revoke)
    revoke.set_defaults(handler=cmd_token_revoke)

    ls = token_sub.add_parser("list", help="list tokens", description="List issued tokens (not the secrets).")
    ls.add_argument("--tenant", help="only this tenant's tokens")
    add_config_option(ls)
    ls.set_defaults(handler=cmd_token_list)

    channels = tv_sub.add_parser("channels", help="show the lineup", description="Show the channel lineup.")
    channels.add_argument("--tenant", help="only the channels this tenant may watch")
    add_config_option(channels)
    channels.set_defaults(handler=cmd_channels)


def _store(config: GatewayConfig) -> TokenStore:
    return TokenStore(config.data_path / "tv")


def _date(epoch: int) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%d %H:%M UTC")


def cmd_token_create(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    days = args.days if args.days is not None else config.tv.token_days
    if not 1 <= days <= 3650:
        raise CliError("--days must be between 1 and 3650")
    tenant = config.tenant_for_domain(args.tenant)
    if not any(ch.allows(tenant) for ch in config.tv.channels):
        print(f"warning: no channel of the lineup is open to tenant {tenant!r}")
    try:
        token, record = _store(config).create(tenant, days, int(time.time()))
    except (TokenStoreError, OSError, ValueError) as exc:
        raise CliError(str(exc)) from None
    base = config.tv.base_url.rstrip("/") or f"http://<gateway>:{config.http.port}"
    print(token)
    print(f"id {record.token_id}, tenant {record.tenant}, expires {_date(record.expires)}")
    print(f"channel list: {base}/iptv/{token}/playlist.m3u")
    print(f"guide:        {base}/iptv/{token}/epg.xml")
    print(f"TV page:      {base}/iptv/{token}/")
    return 0


def cmd_token_revoke(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        record = _store(config).revoke(args.token.strip(), int(time.time()))
    except (TokenStoreError, OSError) as exc:
        raise CliError(str(exc)) from None
    print(f"revoked token {record.token_id} of tenant {record.tenant} (at {_date(record.revoked or 0)})")
    return 0


def cmd_token_list(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    try:
        records = _store(config).records()
    except (TokenStoreError, OSError) as exc:
        raise CliError(str(exc)) from None
    if args.tenant:
        tenant = config.tenant_for_domain(args.tenant)
        records = [r for r in records if r.tenant == tenant]
    if not records:
        print("no tokens")
        return 0
    now = time.time()
    print(f"{'ID':<16}  {'TENANT':<16}  {'EXPIRES':<20}  STATE")
    for r in records:
        state = "revoked" if r.revoked is not None else ("expired" if r.expires <= now else "valid")
        print(f"{r.token_id:<16}  {r.tenant:<16}  {_date(r.expires):<20}  {state}")
    return 0


def _dvr(config: GatewayConfig, ch: ChannelConfig, tenant: str | None) -> str:
    """'8h +7h': the recording window and the time-shifted entries (per tenant zone)."""
    tv = config.tv
    if not ch.record:
        return "-"
    now = time.time()
    if tenant is not None:
        tenants = [tenant]
    elif "*" in ch.tenants:
        tenants = [t.domain for t in config.tenants] or [""]
    else:
        tenants = list(ch.tenants)
    shifts: set[int] = set()
    for name in tenants:
        hq = zone_offset(config.tenant_timezone(name), now)
        site = zone_offset(tv.site_timezone, now)
        margin = SHIFT_MARGIN_SEGMENTS * tv.max_segment_s
        shifts.update(channel_shifts(tv.dvr.timeshift_hours, hq, site, tv.dvr_seconds(ch), margin))
    window = shift_label(round(tv.dvr_seconds(ch)))[1:]
    return " ".join([window, *(shift_label(s) for s in sorted(shifts))])


def cmd_channels(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    channels = list(config.tv.channels)
    tenant = config.tenant_for_domain(args.tenant) if args.tenant else None
    if tenant is not None:
        channels = [ch for ch in channels if ch.allows(tenant)]
    if not channels:
        print("no channels")
        return 0
    if not config.tv.enabled:
        print("note: [tv] enabled = false: the gateway does not serve these channels")
    name_w = max(len(ch.name) for ch in channels)
    dvr = {ch.number: _dvr(config, ch, tenant) for ch in channels}
    dvr_w = max(len("DVR"), *(len(d) for d in dvr.values()))
    print(f"{'NO':>5}  {'NAME':<{name_w}}  {'GROUP':<10}  {'TENANTS':<16}  {'MODE':<20}  {'DVR':<{dvr_w}}  SOURCES")
    for ch in sorted(channels, key=lambda c: c.number):
        pulled = "recorded" if ch.record else "always-on" if ch.number in config.tv.always_on else "on demand"
        mode = pulled + (f", {ch.profile}" if ch.profile else "")
        sources = " > ".join(s.describe() for s in ch.source_specs)
        tenants = ",".join(ch.tenants) or "(none)"
        print(
            f"{ch.number:>5}  {ch.name:<{name_w}}  {ch.group:<10}  {tenants:<16}  {mode:<20}  "
            f"{dvr[ch.number]:<{dvr_w}}  {sources}"
        )
    return 0
