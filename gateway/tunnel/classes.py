"""What each traffic class gets from the tunnel.

- CONTROL (signalling, e.g. SIP between gateways): highest priority, retransmitted
  hop by hop within the latency window, delivered in order.
- VOICE: never retransmitted (a late voice packet is useless); may be duplicated on
  the two best paths; may wait only briefly for the rate cap.
- VIDEO: not retransmitted by the tunnel (WebRTC does its own NACK/PLI end to end).
- TV: retransmitted hop by hop within a latency window of a few round trips, so
  a lossy satellite hop loses nothing; delivered in order; lowest priority.
"""

from __future__ import annotations

from dataclasses import dataclass

from gateway.tunnel.frame import TrafficClass


@dataclass(frozen=True)
class ClassPolicy:
    retransmit: bool
    in_order: bool
    # Longest a frame may wait for the path's rate cap before it is dropped (seconds).
    max_queue_delay: float


POLICIES: dict[TrafficClass, ClassPolicy] = {
    TrafficClass.CONTROL: ClassPolicy(retransmit=True, in_order=True, max_queue_delay=2.0),
    TrafficClass.VOICE: ClassPolicy(retransmit=False, in_order=False, max_queue_delay=0.06),
    TrafficClass.VIDEO: ClassPolicy(retransmit=False, in_order=False, max_queue_delay=0.25),
    TrafficClass.TV: ClassPolicy(retransmit=True, in_order=True, max_queue_delay=1.0),
}

# Strict priority order for the shaper: lower sorts first.
PRIORITY: dict[TrafficClass, int] = {
    TrafficClass.CONTROL: 0,
    TrafficClass.VOICE: 1,
    TrafficClass.VIDEO: 2,
    TrafficClass.TV: 3,
}


def parse_class(name: str) -> TrafficClass:
    try:
        return TrafficClass[name.upper()]
    except KeyError:
        raise ValueError(f"unknown traffic class {name!r} (control, voice, video, tv)") from None
