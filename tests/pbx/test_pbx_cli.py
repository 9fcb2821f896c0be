"""`seabridge pbx asterisk-config`: the lines the PBX administrator pastes, with a secret made at first use."""

from __future__ import annotations

import stat
import tomllib
from pathlib import Path

from tests.support.gateway import seabridge


def test_asterisk_config_prints_a_generated_secret_once(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text(
        f'data_dir = "{tmp_path / "var"}"\n[[tenants]]\ndomain = "acme"\n'
        '[pbx]\nenabled = true\ntenant = "acme"\ntrunk_account = "acme/hq"\nami_username = "gw-kinshasa"\n'
    )
    first = seabridge("pbx", "asterisk-config", "--permit", "10.8.0.2/255.255.255.255", config=cfg)
    assert first.returncode == 0, first.stderr
    secrets_file = tmp_path / "var" / "secrets.toml"
    secret = tomllib.loads(secrets_file.read_text())["pbx_ami_secret"]
    assert len(secret) == 64 and stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
    out = first.stdout
    assert "[gw-kinshasa]\n" in out and f"secret = {secret}\n" in out and "permit = 10.8.0.2/255.255.255.255" in out
    assert "channelvars = SEABRIDGE_SESSION_ID" in out and "[seabridge-session-header]" in out
    assert seabridge("pbx", "asterisk-config", config=cfg).stdout.count(f"secret = {secret}\n") == 1  # same secret


def test_pbx_section_errors_name_the_key(tmp_path: Path) -> None:
    cfg = tmp_path / "gw.toml"
    cfg.write_text('[pbx]\nenabled = true\ntenant = "acme"\n')
    result = seabridge("pbx", "asterisk-config", config=cfg)
    assert result.returncode != 0 and "pbx.trunk_account" in result.stderr
