"""``seabridge pbx asterisk-config``: what the HQ Asterisk's administrator pastes into its configuration."""

from __future__ import annotations

import argparse

from gateway.cli import add_config_option
from gateway.config import GatewayConfig, load_config
from gateway.pbx.dialplan import dialplan_snippet, manager_general_lines, manager_user_section
from gateway.secrets_store import load_or_create

AMI_SECRET_NAME = "pbx_ami_secret"


def register(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    pbx = sub.add_parser("pbx", help="HQ PBX (Asterisk) integration", description="HQ PBX (Asterisk) integration.")
    pbx_sub = pbx.add_subparsers(dest="pbx_command", metavar="ACTION", required=True)
    conf = pbx_sub.add_parser(
        "asterisk-config",
        help="print the manager.conf and extensions.conf lines the PBX needs",
        description="Print the manager.conf user (with the gateway's AMI secret) and the dialplan routines "
        "that carry the gateway's Session-ID, for the PBX's administrator.",
    )
    conf.add_argument("--permit", default="127.0.0.1/255.255.255.255", help="address/mask allowed to use the AMI user")
    add_config_option(conf)
    conf.set_defaults(handler=cmd_asterisk_config)


def ami_secret(config: GatewayConfig) -> str:
    """The configured secret, else the one generated at first start under data_dir."""
    if config.pbx.ami_secret:
        return config.pbx.ami_secret
    return load_or_create(config.data_path, (AMI_SECRET_NAME,)).get(AMI_SECRET_NAME)


def cmd_asterisk_config(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    pbx = config.pbx
    print("; --- manager.conf: add to [general] ---")
    print(manager_general_lines(pbx.session_variable), end="")
    print("\n; --- manager.conf: the gateway's AMI user ---")
    print(manager_user_section(pbx.ami_username, ami_secret(config), args.permit), end="")
    print("\n; --- extensions.conf ---")
    print(f"; Gosub(seabridge-session,s,1) first in the contexts of calls from '{pbx.trunk_endpoint}' and of HQ")
    print(f"; phones; on Dial(PJSIP/<user>@{pbx.trunk_endpoint},...) add b(seabridge-session-header^s^1).")
    print(dialplan_snippet(pbx.session_variable), end="")
    return 0
