"""docker/: the compose file, the Dockerfile and the gateway configuration agree, and the
configuration passes the schema check `seabridge run` makes (no Docker engine runs here)."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from gateway.config import GatewayConfig, load_config

DOCKER = Path(__file__).resolve().parents[1] / "docker"


def _entrypoint() -> ModuleType:
    spec = importlib.util.spec_from_file_location("seabridge_entrypoint", DOCKER / "entrypoint.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def compose() -> dict[str, Any]:
    data = yaml.safe_load((DOCKER / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture
def config(tmp_path: Path) -> GatewayConfig:
    """docker/gateway.toml as the entry point renders it, through load_config."""
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "redis_password").write_text("a1" * 32 + "\n")
    (secrets / "postgres_password").write_text("b2" * 32 + "\n")
    text = _entrypoint().render(
        (DOCKER / "gateway.toml").read_text(), {"SEABRIDGE_ADVERTISED_ADDRESS": "192.0.2.10"}, secrets
    )
    rendered = tmp_path / "gateway.toml"
    rendered.write_text(text)
    assert "${" not in text
    return load_config(rendered)


def _dockerfile() -> dict[str, list[str]]:
    text = (DOCKER / "Dockerfile").read_text().replace("\\\n", " ")
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.setdefault(word.upper(), []).append(rest.strip())
    return out


def _container_ports(ports: list[str]) -> set[str]:
    """ "127.0.0.1:8080:8080/tcp" -> "8080/tcp" (the container side, protocol explicit)."""
    out = set()
    for spec in ports:
        mapping, _, proto = spec.partition("/")
        out.add(f"{mapping.rsplit(':', 1)[-1]}/{proto or 'tcp'}")
    return out


def test_services_and_their_wiring(compose: dict[str, Any], config: GatewayConfig) -> None:
    services = compose["services"]
    assert set(services) == {"secrets", "redis", "postgres", "gateway"}
    gateway = services["gateway"]
    assert gateway["build"] == {"context": "..", "dockerfile": "docker/Dockerfile"}
    assert (DOCKER.parent / gateway["build"]["dockerfile"]).is_file()
    assert gateway["depends_on"] == {
        "redis": {"condition": "service_healthy"},
        "postgres": {"condition": "service_healthy"},
    }
    for name in ("redis", "postgres"):
        assert "healthcheck" in services[name]
        assert services[name]["depends_on"] == {"secrets": {"condition": "service_completed_successfully"}}
        assert re.fullmatch(r"(redis:7|postgres:15)-bookworm", services[name]["image"])
    # The gateway reaches both by their service names, as its configuration says.
    assert config.storage.backend == "postgresql"
    assert re.fullmatch(r"postgresql://seabridge:[0-9a-f]{64}@postgres:5432/seabridge", config.storage.postgres_dsn)
    assert re.fullmatch(r"redis://:[0-9a-f]{64}@redis:6379/0", config.storage.redis_url)
    env = services["postgres"]["environment"]
    assert env["POSTGRES_USER"] == "seabridge" and env["POSTGRES_DB"] == "seabridge"


def test_no_password_is_written_down(compose: dict[str, Any]) -> None:
    text = (DOCKER / "docker-compose.yml").read_text() + (DOCKER / "Dockerfile").read_text()
    assert not re.search(r"(?i)password\s*[:=]\s*['\"]?\w", text.replace("PASSWORD_FILE", ""))
    postgres_env = compose["services"]["postgres"]["environment"]
    assert "POSTGRES_PASSWORD" not in postgres_env and postgres_env["POSTGRES_PASSWORD_FILE"].startswith(
        "/run/secrets/"
    )
    template = (DOCKER / "gateway.toml").read_text()
    assert "${POSTGRES_PASSWORD}" in template and "${REDIS_PASSWORD}" in template


def test_ports_agree_between_config_image_and_compose(compose: dict[str, Any], config: GatewayConfig) -> None:
    wanted = {
        f"{config.sip.udp_port}/udp",
        f"{config.sip.tcp_port}/tcp",
        f"{config.sip.tls_port}/tcp",
        f"{config.http.port}/tcp",
        f"{config.media.port_min}-{config.media.port_max}/udp",
    }
    exposed = {p if "/" in p else f"{p}/tcp" for line in _dockerfile()["EXPOSE"] for p in line.split()}
    assert exposed == wanted
    published = compose["services"]["gateway"]["ports"]
    assert _container_ports(published) == wanted
    # HTTP (health, metrics) is published on the host's loopback only.
    assert [p for p in published if p.split(":")[-1].startswith(f"{config.http.port}/")] == [
        f"127.0.0.1:{config.http.port}:{config.http.port}/tcp"
    ]
    assert config.sip.advertised_address == config.media.advertised_address == "192.0.2.10"


def test_image_runs_from_a_venv_as_a_user_with_its_data_on_a_volume(
    compose: dict[str, Any], config: GatewayConfig
) -> None:
    dockerfile = _dockerfile()
    assert dockerfile["FROM"] == ["debian:12-slim AS build", "debian:12-slim"]
    assert dockerfile["USER"] == ["seabridge"]
    assert any("useradd --system --uid 10001" in run for run in dockerfile["RUN"])
    assert any("python3 -m venv /opt/seabridge" in run for run in dockerfile["RUN"])
    assert dockerfile["VOLUME"] == [f'["{config.data_dir}"]']
    assert f"gateway-data:{config.data_dir}" in compose["services"]["gateway"]["volumes"]
    assert dockerfile["HEALTHCHECK"] and f":{config.http.port}/health" in dockerfile["HEALTHCHECK"][0]
    assert "entrypoint.py" in dockerfile["ENTRYPOINT"][0]


def test_entrypoint_refuses_a_missing_value(tmp_path: Path) -> None:
    entrypoint = _entrypoint()
    with pytest.raises(entrypoint.MissingValue, match="SEABRIDGE_ADVERTISED_ADDRESS"):
        entrypoint.render((DOCKER / "gateway.toml").read_text(), {}, tmp_path)
