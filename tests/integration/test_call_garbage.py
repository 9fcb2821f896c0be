"""Calls leave nothing in reference cycles: what a call built is freed by reference counting.

gateway/gc_tuning.py collects the young generation only every 10,000 objects; that is cheap
only because an ended call's objects are already gone by then. A cycle (say, two objects
of a call naming each other) would keep a call's objects alive until a collection finds
them, making every collection longer and the relay's pauses with it. Here a real gateway
runs real calls with the collector's DEBUG_SAVEALL switched on, so whatever a collection
finds unreachable is kept in gc.garbage, and the test reads what is there.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from tests.integration.conftest import PASSWORDS, SITES, register_sipp, sipp_calls
from tests.support.gateway import GatewayProcess
from tests.support.sipp import Sipp

# Loaded by the gateway's interpreter (through PYTHONPATH): on cue from files the test
# writes, it starts keeping garbage, then reports it. Polling a file needs nothing from the
# gateway's own code, and the thread only runs between the cues.
HOOK = """
import os, sys
if "gateway.cli" in sys.orig_argv:
    import collections, gc, json, threading, time
    folder = os.environ["SEABRIDGE_TEST_GC_DIR"]

    def _watch():
        arm, dump = os.path.join(folder, "arm"), os.path.join(folder, "dump")
        while not os.path.exists(arm):
            time.sleep(0.05)
        gc.collect()
        gc.set_debug(gc.DEBUG_SAVEALL)
        open(os.path.join(folder, "armed"), "w").close()
        while not os.path.exists(dump):
            time.sleep(0.05)
        gc.collect()
        found = collections.Counter(f"{type(o).__module__}.{type(o).__qualname__}" for o in gc.garbage)
        gc.set_debug(0)
        gc.garbage.clear()
        with open(os.path.join(folder, "garbage.json.tmp"), "w") as out:
            json.dump(dict(found), out)
        os.rename(os.path.join(folder, "garbage.json.tmp"), os.path.join(folder, "garbage.json"))

    threading.Thread(target=_watch, name="test-gc-hook", daemon=True).start()
"""


async def _appears(path: Path, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not await asyncio.to_thread(path.exists):
            await asyncio.sleep(0.05)


async def test_calls_leave_no_reference_cycles(
    tmp_path: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hook, cues = tmp_path / "hook", tmp_path / "cues"
    hook.mkdir()
    cues.mkdir()
    (hook / "sitecustomize.py").write_text(HOOK)
    monkeypatch.setenv("PYTHONPATH", str(hook))
    monkeypatch.setenv("SEABRIDGE_TEST_GC_DIR", str(cues))
    gw = GatewayProcess(
        tmp_path_factory.mktemp("gateway"),
        extra_config='[[tenants]]\ndomain = "acme"\ndigest_algorithms = ["MD5"]\n',
        sip_extra="keepalive_interval_s = 0",
    )
    gw.write_config()
    for address in ("alice@acme", "bob@acme"):
        gw.add_user(address, SITES[address], PASSWORDS[address])
    await gw.start()
    try:
        uas_port = Sipp(gw.sip_address, tmp_path, "uas").local_port
        await register_sipp(gw.sip_address, tmp_path / "reg", uas_port)
        (cues / "arm").touch()
        await _appears(cues / "armed")
        uas = Sipp(gw.sip_address, tmp_path / "uas", "uas", local_port=uas_port, calls=40, extra=("-aa",))
        await uas.start()
        try:
            uac = await sipp_calls(gw.sip_address, tmp_path / "uac", calls=40, rate=40)
            assert uac.ok, uac.output[-3000:]
        finally:
            await uas.stop()
        async with asyncio.timeout(30):
            while (await gw.metrics())["seabridge_calls_in_progress"]:
                await asyncio.sleep(0.1)
        (cues / "dump").touch()
        await _appears(cues / "garbage.json")
        garbage = json.loads((cues / "garbage.json").read_text())
    finally:
        await gw.stop()
    assert garbage == {}, f"objects of 40 calls left in reference cycles: {garbage}"
