"""Configuration: shipped examples validate; bad files stop start-up naming the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.config import ConfigError, load_config, parse_config
from tests.support.gateway import seabridge

CONFIG_DIR = Path(__file__).resolve().parents[1] / "config"


@pytest.mark.parametrize("path", sorted(CONFIG_DIR.glob("*.toml")), ids=lambda p: p.name)
def test_example_configs_validate(path: Path) -> None:
    load_config(path)


@pytest.mark.parametrize(
    ("data", "key", "fragment"),
    [
        ({"sip": {"udp_prot": 5060}}, "sip.udp_prot", "did you mean 'udp_port'"),
        ({"sip": {"udp_port": "5060"}}, "sip.udp_port", "expected an integer"),
        ({"sip": {"udp_port": 70000}}, "sip.udp_port", "at most 65535"),
        ({"sip": {"bind": "localhost"}}, "sip.bind", "not an IP address"),
        ({"role": "moon"}, "role", "must be one of"),
        ({"tenants": [{"domain": "a", "timezone": "Mars/Base"}]}, "tenants[0].timezone", "unknown IANA"),
        ({"tenants": [{"aliases": []}]}, "tenants[0].domain", "required"),
        ({"storage": {"backend": "postgresql"}}, "storage.postgres_dsn", "needs postgres_dsn"),
        ({"media": {"port_min": 30000, "port_max": 30001}}, "media", "port_max"),
        ({"sip": {"workers": 2}}, "sip.workers", "set storage.redis_url"),
        ({"sip": {"workers": 65}}, "sip.workers", "at most 64"),
        (
            {"sip": {"workers": 8}, "storage": {"redis_url": "redis://127.0.0.1"}, "media": {"port_max": 20020}},
            "sip.workers",
            "at least 4 media ports",
        ),
    ],
)
def test_bad_values_name_their_key(data: dict[str, object], key: str, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(data)
    assert info.value.key == key
    assert fragment in str(info.value)


def test_seabridge_run_refuses_a_bad_file_with_the_key(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('data_dir = "var"\n[sip]\nudp_port = "five"\n')
    result = seabridge("run", config=bad)
    assert result.returncode == 2
    assert "sip.udp_port: expected an integer" in result.stderr
    assert "Traceback" not in result.stderr
    broken = tmp_path / "broken.toml"
    broken.write_text("[sip\n")
    result = seabridge("run", config=broken)
    assert result.returncode == 2 and "not valid TOML" in result.stderr


def test_every_command_has_help() -> None:
    for args in (
        ("--help",),
        ("run", "--help"),
        ("sip-worker", "--help"),
        ("user", "--help"),
        ("user", "add", "--help"),
        ("user", "list", "--help"),
        ("user", "remove", "--help"),
    ):
        result = seabridge(*args)
        assert result.returncode == 0 and "usage: seabridge" in result.stdout, args
