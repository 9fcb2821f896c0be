"""`seabridge user add|list|remove` against the embedded database."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from tests.support.gateway import seabridge


def config(tmp_path: Path) -> Path:
    path = tmp_path / "gw.toml"
    path.write_text(f'data_dir = "{tmp_path / "var"}"\n[[tenants]]\ndomain = "acme"\naliases = ["acme.example.com"]\n')
    return path


def test_add_list_remove(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    added = seabridge("user", "add", "alice@acme", "--site", "kinshasa", "--password", "s3cret-pass", config=cfg)
    assert added.returncode == 0, added.stderr
    assert (
        seabridge(
            "user",
            "add",
            "bob@acme.example.com",
            "--site",
            "lubumbashi",
            "--password",
            "-",
            config=cfg,
            input_text="another-pass\n",
        ).returncode
        == 0
    )
    assert (
        seabridge("user", "add", "dave@globex", "--site", "conakry", "--password", "globex-pass", config=cfg).returncode
        == 0
    )
    listing = seabridge("user", "list", config=cfg).stdout
    assert "alice@acme" in listing and "bob@acme" in listing and "dave@globex" in listing
    only_acme = seabridge("user", "list", "--tenant", "acme", config=cfg).stdout
    rows = [line.split() for line in only_acme.splitlines()[1:]]
    assert rows == [["alice@acme", "kinshasa"], ["bob@acme", "lubumbashi"]]
    assert seabridge("user", "remove", "alice@acme", config=cfg).returncode == 0
    assert "alice@acme" not in seabridge("user", "list", config=cfg).stdout


def test_passwords_are_never_stored(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    seabridge("user", "add", "alice@acme", "--site", "kinshasa", "--password", "s3cret-pass", config=cfg)
    raw = (tmp_path / "var" / "gateway.db").read_bytes()
    assert b"s3cret-pass" not in raw
    with sqlite3.connect(tmp_path / "var" / "gateway.db") as db:
        (md5, sha) = db.execute("SELECT ha1_md5, ha1_sha256 FROM users").fetchone()
    assert len(md5) == 32 and len(sha) == 64


def test_clear_errors(tmp_path: Path) -> None:
    cfg = config(tmp_path)
    seabridge("user", "add", "alice@acme", "--site", "kinshasa", "--password", "s3cret-pass", config=cfg)
    dup = seabridge("user", "add", "alice@acme", "--site", "kinshasa", "--password", "s3cret-pass", config=cfg)
    assert dup.returncode == 2 and "already exists" in dup.stderr and "Traceback" not in dup.stderr
    bad = seabridge("user", "add", "not-an-address", "--site", "x", "--password", "s3cret-pass", config=cfg)
    assert bad.returncode == 2 and "not a user address" in bad.stderr
    short = seabridge("user", "add", "carol@acme", "--site", "x", "--password", "short", config=cfg)
    assert short.returncode == 2 and "at least 8" in short.stderr
    missing = seabridge("user", "remove", "zed@acme", config=cfg)
    assert missing.returncode == 2 and "no user zed@acme" in missing.stderr
    nopw = seabridge("user", "add", "carol@acme", "--site", "x", config=cfg, input_text="")
    assert nopw.returncode == 2 and "--password is required" in nopw.stderr
