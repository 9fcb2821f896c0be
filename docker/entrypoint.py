"""Container entry point: render the configuration for this deployment, then run the gateway.

``docker/gateway.toml`` is a template: each dollar-brace ``NAME`` placeholder is replaced by the content of
``/run/secrets/<name>`` (passwords generated at first start by the compose file's
``secrets`` service) or, failing that, by the environment variable ``NAME``. The result
is written under the data volume, readable by the gateway's user only, and ``seabridge
run`` is started on it (replacing this process, so signals reach the gateway).
Standard library only: it runs before anything else is known to work.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from pathlib import Path

PLACEHOLDER = re.compile(r"\$\{([A-Z][A-Z0-9_]*)\}")
SECRETS_DIR = Path(os.environ.get("SEABRIDGE_SECRETS_DIR", "/run/secrets"))


class MissingValue(Exception):
    pass


def render(template: str, env: Mapping[str, str], secrets_dir: Path = SECRETS_DIR) -> str:
    def value(match: re.Match[str]) -> str:
        name = match[1]
        secret = secrets_dir / name.lower()
        if secret.is_file():
            return secret.read_text(encoding="utf-8").strip()
        if env.get(name):
            return env[name]
        raise MissingValue(f"{name} is not set: no {secret} and no environment variable {name}")

    return PLACEHOLDER.sub(value, template)


def main() -> None:
    template = Path(os.environ.get("SEABRIDGE_CONFIG_TEMPLATE", "/etc/seabridge/gateway.toml"))
    target = Path(os.environ.get("SEABRIDGE_CONFIG", "/var/lib/seabridge/gateway.toml"))
    try:
        text = render(template.read_text(encoding="utf-8"), os.environ)
    except MissingValue as exc:
        sys.exit(f"seabridge entrypoint: {exc}")
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.execvp("seabridge", ["seabridge", "run", "--config", str(target), *sys.argv[1:]])


if __name__ == "__main__":
    main()
