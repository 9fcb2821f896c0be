"""The ``[webrtc]`` section: the browser phone's page, its sessions, and ICE/DTLS for satellite links.

ICE retransmission and consent settings are library constants in aioice;
``gateway.webrtc.aiortc_glue.apply_transport_tuning`` sets them from here,
once, at start-up (the one place that does).
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from typing import Literal

from gateway.configschema import InvalidField, bounds

_ICE_URL = re.compile(r"^(stun|turn|turns):([^:?]+|\[[0-9a-fA-F:]+\])(:\d+)?(\?transport=(udp|tcp))?$")


@dataclass(frozen=True)
class IceServerConfig:
    """One STUN or TURN server, as in the WebRTC RTCIceServer dictionary."""

    urls: tuple[str, ...]
    username: str = ""
    credential: str = ""

    def __post_init__(self) -> None:
        if not self.urls:
            raise InvalidField("urls", "name at least one stun:, turn: or turns: URL")
        for url in self.urls:
            if not _ICE_URL.match(url):
                raise InvalidField("urls", f"{url!r} is not a stun:, turn: or turns: URL like stun:10.0.0.1:3478")
            if url.startswith("turn") and not (self.username and self.credential):
                raise InvalidField("credential", f"TURN server {url!r} needs a username and a credential")


@dataclass(frozen=True)
class WebRtcConfig:
    enabled: bool = True
    # The page and its WebSocket over HTTPS (browsers give camera and microphone to secure pages only).
    https_bind: str = "0.0.0.0"
    https_port: int = field(default=8443, metadata=bounds(0, 65535))
    # PEM files; both empty means a self-signed certificate generated at first start under
    # data_dir/tls/, shared with SIP over TLS (naming every address in certificate_names and the gateway's addresses).
    certificate: str = ""
    private_key: str = ""
    certificate_names: tuple[str, ...] = ()
    # How long a sign-in lasts before the page must ask for the password again.
    session_ttl_s: int = field(default=43200, metadata=bounds(60, 30 * 86400))
    max_sessions_per_user: int = field(default=5, metadata=bounds(1, 100))

    # --- ICE -----------------------------------------------------------------------------
    # Addresses whose host candidates the gateway offers browsers; empty means every
    # non-loopback address of this host. Loopback works only when named here.
    ice_addresses: tuple[str, ...] = ()
    # UDP ports for ICE (one per call per address); 0 and 0 means any free port.
    ice_port_min: int = field(default=0, metadata=bounds(0, 65535))
    ice_port_max: int = field(default=0, metadata=bounds(0, 65535))
    # For gateways behind NAT (only the first STUN and the first TURN server are used by aioice);
    # also handed to browsers.
    ice_servers: tuple[IceServerConfig, ...] = ()
    # "relay": browsers use only their TURN relay candidates (sites whose LAN forbids direct UDP,
    # or to keep media on a known path); "all": any candidate.
    ice_transport_policy: Literal["all", "relay"] = "all"
    # STUN retransmission (aioice.stun.RETRY_RTO / RETRY_MAX): the first retransmission after
    # ice_retry_rto_ms, doubling, at most ice_retry_max times. Keep the RTO above the link's
    # round trip (600 ms on geostationary satellite) or every check is sent twice.
    ice_retry_rto_ms: int = field(default=500, metadata=bounds(50, 10000))
    ice_retry_max: int = field(default=6, metadata=bounds(1, 12))
    # Consent freshness (RFC 7675; aioice.ice.CONSENT_INTERVAL / CONSENT_FAILURES): the path is
    # dropped after this many unanswered checks, one every interval.
    ice_consent_interval_s: int = field(default=5, metadata=bounds(1, 60))
    ice_consent_failures: int = field(default=6, metadata=bounds(1, 60))
    # ICE plus the DTLS handshake must finish within this, or the call fails. DTLS
    # retransmits on OpenSSL's own timer (1 s, doubling), which suits 600 ms round trips.
    connect_timeout_s: int = field(default=30, metadata=bounds(5, 300))

    # --- the internal SIP user agent ---------------------------------------------------------
    # Where the browser sessions' SIP user agent listens; it registers each session with the
    # gateway's own SIP service and carries calls to it over this address.
    agent_address: str = "127.0.0.1"
    agent_port: int = field(default=0, metadata=bounds(0, 65535))
    # RTP ports for the SIP side of browser calls (0 and 0: any free even port).
    rtp_port_min: int = field(default=0, metadata=bounds(0, 65535))
    rtp_port_max: int = field(default=0, metadata=bounds(0, 65535))
    register_expires_s: int = field(default=300, metadata=bounds(60, 3600))
    # Opus towards browsers in transcoded (phone) calls: narrowband G.711 audio needs little.
    opus_bitrate_kbps: int = field(default=24, metadata=bounds(6, 128))
    # A browser's repeated picture-loss reports reach the sending browser at most this often.
    keyframe_interval_ms: int = field(default=500, metadata=bounds(50, 10000))

    def __post_init__(self) -> None:
        for key in ("https_bind", "agent_address"):
            _check_address(key, getattr(self, key))
        for address in self.ice_addresses:
            _check_address("ice_addresses", address)
        if bool(self.certificate) != bool(self.private_key):
            raise InvalidField("private_key", "give both certificate and private_key, or neither")
        for low, high in (("ice_port_min", "ice_port_max"), ("rtp_port_min", "rtp_port_max")):
            lo, hi = getattr(self, low), getattr(self, high)
            if (lo == 0) != (hi == 0):
                raise InvalidField(high, f"set both {low} and {high}, or neither")
            if lo and hi < lo + 1:
                raise InvalidField(high, f"{high} must be above {low}")

    @property
    def ice_port_range(self) -> tuple[int, int] | None:
        return (self.ice_port_min, self.ice_port_max) if self.ice_port_min else None

    @property
    def rtp_port_range(self) -> tuple[int, int] | None:
        return (self.rtp_port_min, self.rtp_port_max) if self.rtp_port_min else None


def _check_address(key: str, value: str) -> None:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        raise InvalidField(key, f"{value!r} is not an IP address") from None
