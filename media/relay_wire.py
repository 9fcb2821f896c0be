"""The control protocol between the relay manager and its worker processes.

One JSON object per line over a Unix socketpair, both ways:

* requests ``{"id": N, "op": ..., ...}`` (``id`` 0: no reply unless it fails);
* replies ``{"id": N, "ok": true, "result": ...}`` or ``{"id": N, "ok": false, "error":
  "...", "port": P}`` (``port`` only when a port was in use);
* events ``{"event": "timed_out", "session": ..., "leg": ..., "idle_s": ...}``.

Ops: ``configure`` (the engine's settings; answered once the engine exists), ``open``,
``set_remote``, ``arm_timeout``, ``inject`` (hex datagrams), ``stats``, ``close``, ``totals``, ``shutdown``.
Control traffic is per call, not per packet, so JSON's cost does not matter here.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from media.errors import RelayError
from media.relay_core import Address, LegStats, LegTimedOut, SessionStats, StreamStats
from media.relay_engine import RelayTotals

__all__ = [
    "address_from_json",
    "decode",
    "encode",
    "event_from_json",
    "stats_from_json",
    "totals_from_json",
]


def encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    try:
        message = json.loads(line)
    except ValueError as exc:
        raise RelayError(f"bad control message: {exc}") from None
    if not isinstance(message, dict):
        raise RelayError("bad control message: not an object")
    return message


def address_from_json(value: Any) -> Address | None:
    if value is None:
        return None
    if isinstance(value, list) and len(value) == 2:
        return (str(value[0]), int(value[1]))
    if isinstance(value, list) and len(value) == 4:
        return (str(value[0]), int(value[1]), int(value[2]), int(value[3]))
    raise RelayError(f"bad address {value!r}")


def _stream_from_json(data: dict[str, Any]) -> StreamStats:
    fields = dict(data)
    fields["source"] = address_from_json(fields["source"])
    fields["sdp_address"] = address_from_json(fields["sdp_address"])
    return StreamStats(**fields)


def _leg_from_json(data: dict[str, Any]) -> LegStats:
    return LegStats(
        _stream_from_json(data["rtp"]),
        _stream_from_json(data["rtcp"]),
        data["timeout_deadline"],
        data["timed_out"],
    )


def stats_to_json(stats: SessionStats) -> dict[str, Any]:
    return asdict(stats)


def stats_from_json(data: dict[str, Any]) -> SessionStats:
    return SessionStats(data["session_id"], _leg_from_json(data["a"]), _leg_from_json(data["b"]))


def totals_from_json(data: dict[str, Any]) -> RelayTotals:
    return RelayTotals(**data)


def event_to_json(event: LegTimedOut) -> dict[str, Any]:
    return {"event": "timed_out", "session": event.session_id, "leg": event.leg, "idle_s": event.idle_s}


def event_from_json(data: dict[str, Any]) -> LegTimedOut:
    if data.get("event") != "timed_out" or data.get("leg") not in ("a", "b"):
        raise RelayError(f"unknown relay event {data!r}")
    return LegTimedOut(str(data["session"]), data["leg"], float(data["idle_s"]))
