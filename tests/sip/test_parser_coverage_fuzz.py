"""A coverage-guided pass (atheris/libFuzzer) over the SIP grammar core.

Seeded with the real captures and the RFC 4475 set; a fixed run count and seed keep it
repeatable. libFuzzer exits non-zero on any exception other than SipParseError, on an
unstable serialisation, or on a hang, and leaves the input that did it in tmp_path.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures"
RUNS = 40_000


def test_parser_survives_coverage_guided_fuzzing(tmp_path: Path) -> None:
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    for seed in [*(FIXTURES / "sip").glob("*.bin"), *(FIXTURES / "rfc4475").glob("*.dat")]:
        shutil.copy(seed, corpus / seed.name)
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.sip.atheris_parser",
            f"-runs={RUNS}",
            "-seed=4475",
            "-max_len=4096",
            "-timeout=10",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    crashes = [p.name for p in tmp_path.iterdir() if p.is_file()]
    assert result.returncode == 0 and not crashes, result.stderr[-4000:]
    done = re.findall(r"#(\d+)\s+DONE\s+cov: (\d+) ft: (\d+) corp: (\d+)", result.stderr)
    assert done and int(done[-1][0]) >= RUNS
    runs, cov, features, corp = done[-1]
    print(f"\natheris: {runs} inputs, {cov} edges, {features} features, corpus grew to {corp}")
