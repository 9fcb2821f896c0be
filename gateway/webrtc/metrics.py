"""The browser phone's Prometheus metrics (registry passed in, no global one).

Codec counters are incremented where codecs are really invoked: a decoded
frame is counted when aiortc's decoder thread takes it (``aiortc_glue.count_decodes``),
an encoded one when our track hands a frame to aiortc's encoder. Forwarded
calls invoke neither, so they leave these counters untouched.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge


class WebRtcMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.frames_decoded = Counter(
            "seabridge_webrtc_frames_decoded", "Media frames the gateway decoded", ["kind"], registry=registry
        )
        self.frames_encoded = Counter(
            "seabridge_webrtc_frames_encoded", "Media frames the gateway encoded", ["kind"], registry=registry
        )
        self.forwarded = Counter(
            "seabridge_webrtc_rtp_forwarded", "RTP packets forwarded without re-encoding", ["kind"], registry=registry
        )
        self.keyframe_requests = Counter(
            "seabridge_webrtc_keyframe_requests",
            "Keyframe requests from receivers, passed upstream or held back by the rate limit",
            ["result"],
            registry=registry,
        )
        self.sessions = Gauge("seabridge_webrtc_sessions", "Signed-in browser sessions", registry=registry)
        self.calls = Gauge("seabridge_webrtc_calls", "Browser calls in progress", registry=registry)
        self.logins = Counter("seabridge_webrtc_logins", "Sign-in attempts", ["result"], registry=registry)
        for kind in ("audio", "video"):
            self.frames_decoded.labels(kind)
            self.frames_encoded.labels(kind)
            self.forwarded.labels(kind)
        for result in ("passed", "suppressed"):
            self.keyframe_requests.labels(result)
