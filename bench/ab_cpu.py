"""CPU per call set-up of the working tree against a git revision, both loaded at the same time.

bench/signalling_bench.py measures one system after another. On a shared machine the CPU
a call costs drifts by 5-10% between runs minutes apart (other tenants, cache contention),
so a change worth 2% cannot be told from noise that way. Here the two checkouts run side
by side: each gets its own gateway and its own sipp pair with the same load, at the same
time, so whatever slows the machine slows both, and their ratio holds steady to about 1%
from round to round. Billing switched off, for scale, reads 0.885 three times running.

Each side runs bench/signalling_bench.py's call (407 challenge, INVITE with credentials,
200, ACK, BYE) from its own checkout: the base revision is checked out into a temporary
git worktree, removed at the end. One SIP worker per side by default (both sides together
stay below the machine's two cores); ``--sip-workers 2`` gives each side two and a private
redis-server.

    PYTHONPATH=. .venv/bin/python bench/ab_cpu.py [REV] [--rate 300] [--seconds 10] [--rounds 4]

It prints, for each round, the CPU per call of the base (A) and of the working tree (B)
and B/A; then the mean ratio and its spread. Below 1.0 the working tree is cheaper.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]


async def side(rate: int, seconds: float, workers: int) -> None:
    """One side's gateway and load (run in its checkout); prints its result as JSON.

    This code runs against the *base* checkout's bench/signalling_bench.py, so it uses only
    what that module has long had (hence starting Redis here, as its main() does)."""
    import bench.signalling_bench as sb
    from tests.support.services import redis_server

    folder = Path(tempfile.mkdtemp(prefix="seabridge-ab-"))
    with contextlib.ExitStack() as services:
        shared, helpers = "", []
        if workers > 1:
            url = services.enter_context(redis_server())
            shared, helpers = f'[storage]\nredis_url = "{url}"\n', [sb.pid_of_redis(url)]
        gw = sb.bench_gateway(folder / "gw", workers, shared)
        await gw.start()
        try:
            await sb.registrations_per_second("side", gw.sip_address, 50, folder)
            assert gw.process is not None
            roots = [gw.process.pid, *helpers]
            (step,) = await sb.calls_per_second(
                "side", gw.sip_address, [rate], seconds, folder, cpu=lambda: sb.tree_cpu_seconds(roots)
            )
        finally:
            await gw.stop()
    shutil.rmtree(folder, ignore_errors=True)
    parts = {k: 1000 * v / max(step.ok, 1) for k, v in (step.cpu_parts or {}).items()}  # ms per call
    result = {"ok": step.ok, "failed": step.failed, "cpu_ms": step.cpu_ms_per_call, "parts": parts}
    print("AB " + json.dumps(result))


def run_side(checkout: Path, args: argparse.Namespace) -> subprocess.Popen[str]:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--side", "--rate", str(args.rate)]
    cmd += ["--seconds", str(args.seconds), "--sip-workers", str(args.sip_workers)]
    env = {**os.environ, "PYTHONPATH": str(checkout)}
    return subprocess.Popen(cmd, cwd=checkout, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def result_of(proc: subprocess.Popen[str], name: str) -> dict[str, Any]:
    out, _ = proc.communicate(timeout=600)
    for line in out.splitlines():
        if line.startswith("AB "):
            found: dict[str, Any] = json.loads(line[3:])
            return found
    raise SystemExit(f"side {name} gave no result:\n{out[-3000:]}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("rev", nargs="?", default="HEAD", help="the base revision (default: HEAD)")
    parser.add_argument("--rate", type=int, default=300, help="calls per second on each side")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--sip-workers", type=int, default=1)
    parser.add_argument("--side", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        asyncio.run(side(args.rate, args.seconds, args.sip_workers))
        return 0
    base = Path(tempfile.mkdtemp(prefix="seabridge-ab-base-")) / "tree"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", str(base), args.rev], check=True)
    ratios: list[float] = []
    try:
        print(f"A: {args.rev} (worktree {base}); B: the working tree {REPO}; {args.rate} calls/s each")
        for round_ in range(1, args.rounds + 1):
            a, b = run_side(base, args), run_side(REPO, args)
            ra, rb = result_of(a, "A"), result_of(b, "B")
            for name, r in (("A", ra), ("B", rb)):
                if r["failed"] or not r["cpu_ms"]:
                    raise SystemExit(f"round {round_}: side {name} failed calls or did no work: {r}")
            ratio = rb["cpu_ms"] / ra["cpu_ms"]
            ratios.append(ratio)
            print(f"round {round_}: A {ra['cpu_ms']:.3f} ms/call, B {rb['cpu_ms']:.3f} ms/call, B/A {ratio:.3f}")
            for name, r in (("A", ra), ("B", rb)):
                parts = ", ".join(f"{k} {v:.3f}" for k, v in r["parts"].items())
                print(f"    {name}: {parts}")
    finally:
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base)], check=False)
        shutil.rmtree(base.parent, ignore_errors=True)
    spread = statistics.stdev(ratios) if len(ratios) > 1 else 0.0
    print(f"B/A mean {statistics.mean(ratios):.3f} (sd {spread:.3f}, {len(ratios)} rounds; below 1: B is cheaper)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
