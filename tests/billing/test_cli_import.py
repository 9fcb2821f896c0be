"""`seabridge billing import-rates` end to end: the real command line, real files."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from billing.tariff_files import TariffBook

REPO = Path(__file__).resolve().parents[2]


def seabridge(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", "import sys; from gateway.cli import main; sys.exit(main())", *args],
        cwd=cwd,
        env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_import_rates_writes_a_tariff_the_gateway_loads(tmp_path: Path) -> None:
    config = tmp_path / "gw.toml"
    config.write_text(f'data_dir = "{tmp_path / "var"}"\n[billing]\ntariff_dir = "{tmp_path / "tariffs"}"\n')
    (tmp_path / "tariffs").mkdir()
    (tmp_path / "tariffs" / "acme-standard.toml").write_bytes((REPO / "config/tariffs/acme-standard.toml").read_bytes())
    sheet = REPO / "config/tariffs/carrier-example.csv"
    done = seabridge(
        "billing",
        "import-rates",
        str(sheet),
        "--tariff",
        "carrier",
        "--base",
        "acme-standard",
        "-c",
        str(config),
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr
    assert "imported 5 destinations, 11 prefixes into tariff 'carrier'" in done.stdout
    book = TariffBook.load(tmp_path / "tariffs")
    assert book.names() == ["acme-standard", "carrier"]
    assert book.get("carrier").periods == book.get("acme-standard").periods  # type: ignore[union-attr]
    again = seabridge("billing", "import-rates", str(sheet), "--tariff", "carrier", "-c", str(config), cwd=tmp_path)
    assert again.returncode == 2 and "exists (use --replace" in again.stderr


def test_import_rates_reports_the_bad_row_and_writes_nothing(tmp_path: Path) -> None:
    sheet = tmp_path / "bad.csv"
    sheet.write_text("prefix,destination,rate\n86,China,0.10\n243,DR Congo,0.8O\n")
    config = tmp_path / "gw.toml"
    config.write_text(f'[billing]\ntariff_dir = "{tmp_path / "tariffs"}"\n')
    done = seabridge("billing", "import-rates", str(sheet), "-c", str(config), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.strip() == f"seabridge: error: {sheet}: row 3, column 'rate': '0.8O' is not a decimal amount"
    assert not (tmp_path / "tariffs").exists()
