"""The `seabridge` command line: one entry point, a subcommand per job.

Each package that owns commands exposes ``register(subparsers)``; a command's
handler receives the parsed arguments and returns an exit status. Errors meant
for the user are raised as ``CliError`` (or ``ConfigError``) and printed without
a traceback.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from importlib.metadata import PackageNotFoundError, version

from gateway.configschema import ConfigError

Handler = Callable[[argparse.Namespace], int]


class CliError(Exception):
    """A problem the user can fix; printed as one line, exit status 2."""


def _version() -> str:
    try:
        return version("seabridge")
    except PackageNotFoundError:
        return "unknown"


def add_config_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--config",
        "-c",
        metavar="FILE",
        help="TOML configuration file (default: built-in single-site defaults)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="seabridge",
        description="Seabridge: phone, video and TV gateway for remote sites.",
    )
    parser.add_argument("--version", action="version", version=f"seabridge {_version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from gateway import commands

    commands.register(sub)
    for module_name in _PLUGIN_COMMANDS:
        module = __import__(module_name, fromlist=["register"])
        module.register(sub)
    return parser


# Packages that add their own subcommands (each module has register(subparsers)).
_PLUGIN_COMMANDS: tuple[str, ...] = ("gateway.pbx.cli", "gateway.tunnel.cli", "billing.cli", "media.tv.cli")


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Handler = args.handler
    try:
        return handler(args)
    except (CliError, ConfigError) as exc:
        print(f"seabridge: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    # Run the imported module's main, so the exception classes commands raise are the ones it catches.
    from gateway.cli import main as package_main

    sys.exit(package_main())
