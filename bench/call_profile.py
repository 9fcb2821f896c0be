"""Python work per call set-up: function calls counted by cProfile, Seabridge beside the naive floor.

CPU time per call (bench/signalling_bench.py) drifts by a third within an hour on a shared
machine, so a change worth a few per cent cannot be seen in it. The number of Python
function calls the event loop's thread makes per call set-up hardly moves between runs: it
is the figure to compare before and after a change to the SIP path. It is a proxy: calls of
Python functions (each a frame) cost far more than calls of C built-ins, so both are shown,
and a change that only removes built-in calls may not show in CPU time at all.

Both systems get the same sipp call (407 challenge, INVITE with credentials, 200, ACK, BYE)
at a modest rate; Seabridge runs as one process on its defaults (SQLite, no Redis), the
naive B2BUA (bench/naive_b2bua.py) as the floor. Each is profiled only while the calls run:
a ``sitecustomize`` put in front of their PYTHONPATH turns cProfile on and off on SIGUSR1,
and writes the counts when the process exits. cProfile slows both down, so the times it
prints are for ranking functions, not for comparing with other benches.

    PYTHONPATH=. .venv/bin/python bench/call_profile.py [--calls 1500] [--rate 150] [--top 25]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import pstats
import signal
import sys
import tempfile
from pathlib import Path

from bench.signalling_bench import PASSWORD, bench_gateway, calls_per_second, registrations_per_second
from tests.support.ports import free_port

HOOK = """
import os, signal
_cmd = open("/proc/self/cmdline", "rb").read().split(b"\\0")
if any(part.endswith((b"gateway.cli", b"naive_b2bua.py")) for part in _cmd):
    import atexit, cProfile
    _profile, _on = cProfile.Profile(), [False]

    def _toggle(_signum, _frame):
        (_profile.disable if _on[0] else _profile.enable)()
        _on[0] = not _on[0]

    def _dump():
        _profile.dump_stats(os.path.join({folder!r}, f"{{os.getpid()}}.prof"))

    def _terminated(_signum, _frame):  # the naive B2BUA has no SIGTERM handling of its own
        _dump()
        os._exit(0)

    signal.signal(signal.SIGUSR1, _toggle)
    signal.signal(signal.SIGTERM, _terminated)  # the gateway puts its own in place: it exits cleanly
    atexit.register(_dump)
"""


async def profiled(name: str, pid: int, target: tuple[str, int], args: argparse.Namespace, folder: Path) -> None:
    """Register the callee, then run the calls with the profiler on in ``pid``."""
    await registrations_per_second(name, target, 10, folder)
    os.kill(pid, signal.SIGUSR1)
    steps = await calls_per_second(name, target, [args.rate], args.calls / args.rate, folder)
    os.kill(pid, signal.SIGUSR1)
    if not steps or steps[0].ok == 0:
        raise SystemExit(f"{name}: no call succeeded")


def report(name: str, path: Path, calls: int, top: int) -> tuple[float, float]:
    stats = pstats.Stats(str(path))
    entries = stats.stats  # type: ignore[attr-defined]
    total = int(sum(entry[1] for entry in entries.values()))
    per_call = total / calls
    # Calls of Python functions (a frame each) cost far more than calls of C built-ins
    # (dict.get, str.strip), which cProfile counts alike: both are shown.
    frames = int(sum(entry[1] for (file, _line, _name), entry in entries.items() if file != "~"))
    print(
        f"\n{name}: {per_call:.0f} function calls per call set-up ({total} for {calls} calls): "
        f"{frames / calls:.0f} of Python functions, {(total - frames) / calls:.0f} of built-ins"
    )
    for label, column in (("by calls", 1), ("by own time", 2)):
        print(f"  top {top} {label} (per call set-up):")
        for (file, line, function), entry in sorted(entries.items(), key=lambda kv: -kv[1][column])[:top]:
            where = f"{Path(file).name}:{line}" if line else "built-in"
            print(f"    {entry[1] / calls:8.1f} calls {1e6 * entry[2] / calls:8.1f} us  {function} ({where})")
    return per_call, frames / calls


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=1500)
    parser.add_argument("--rate", type=int, default=150, help="calls per second (below both systems' ceilings)")
    parser.add_argument("--top", type=int, default=25)
    args = parser.parse_args()
    folder = Path(tempfile.mkdtemp(prefix="seabridge-call-profile-"))
    hook = folder / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK.format(folder=str(folder)))
    os.environ["PYTHONPATH"] = os.pathsep.join([str(hook), os.environ.get("PYTHONPATH", "")])
    results: dict[str, tuple[float, float]] = {}

    port = free_port()
    naive_py = Path(__file__).with_name("naive_b2bua.py")
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(naive_py), "--port", str(port), "--password", PASSWORD,
        stdin=asyncio.subprocess.DEVNULL, stdout=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        if await asyncio.wait_for(proc.stdout.readline(), 10) != b"ready\n":
            raise SystemExit("the naive B2BUA did not start")
        await profiled("naive", proc.pid, ("127.0.0.1", port), args, folder)
    finally:
        proc.terminate()
        await proc.wait()
    results["naive"] = report("naive Python B2BUA (the floor)", folder / f"{proc.pid}.prof", args.calls, args.top)

    gw = bench_gateway(folder / "seabridge", sip_workers=1)
    await gw.start()
    assert gw.process is not None
    pid = gw.process.pid
    try:
        await profiled("seabridge", pid, gw.sip_address, args, folder)
    finally:
        await gw.stop()
    results["seabridge"] = report("seabridge (one process, defaults)", folder / f"{pid}.prof", args.calls, args.top)

    (s_all, s_frames), (n_all, n_frames) = results["seabridge"], results["naive"]
    print(
        f"\nfunction calls per call set-up: seabridge {s_all:.0f}, naive floor {n_all:.0f}, ratio {s_all / n_all:.1f}; "
        f"of Python functions: seabridge {s_frames:.0f}, naive floor {n_frames:.0f}, ratio {s_frames / n_frames:.1f}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
