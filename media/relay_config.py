"""The relay's settings, and their mapping from the gateway's ``[media]`` section."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Protocol

from media.errors import RelayError

__all__ = ["MediaSection", "RelayConfig"]


class MediaSection(Protocol):
    """The fields of ``gateway.config.MediaConfig`` the relay reads (kept structural: media
    does not import the gateway)."""

    @property
    def bind(self) -> str: ...
    @property
    def advertised_address(self) -> str: ...
    @property
    def port_min(self) -> int: ...
    @property
    def port_max(self) -> int: ...
    @property
    def rtp_timeout_s(self) -> int: ...
    @property
    def workers(self) -> int: ...
    @property
    def dscp(self) -> int: ...


@dataclass(frozen=True)
class RelayConfig:
    bind_host: str
    # The address put in SDP c= lines for the relay's ports (what phones send to).
    advertised_host: str
    port_min: int
    port_max: int
    rtp_timeout_s: float = 60.0
    # 0 relays in the calling process (the default, and what tests use); N > 0 shards
    # sessions over N worker processes that each own their sessions' sockets.
    workers: int = 0
    # Worker processes run uvloop when it is installed (the in-process relay runs on
    # whatever loop the gateway runs).
    worker_uvloop: bool = True
    # DiffServ code point on relayed packets; 46 = EF, what voice should carry.
    dscp: int = 46
    # SO_RCVBUF per relay socket in bytes; 0 keeps the kernel default.
    socket_rcvbuf: int = 0

    def __post_init__(self) -> None:
        for name in ("bind_host", "advertised_host"):
            try:
                ipaddress.ip_address(getattr(self, name))
            except ValueError:
                raise RelayError(f"{name}: {getattr(self, name)!r} is not an IP address") from None
        if not 0 < self.port_min < self.port_max <= 65535:
            raise RelayError(f"bad port range {self.port_min}-{self.port_max}")
        if self.rtp_timeout_s <= 0:
            raise RelayError("rtp_timeout_s must be positive")
        if not 0 <= self.workers <= 64:
            raise RelayError("workers must be 0..64")
        if not 0 <= self.dscp <= 63:
            raise RelayError("dscp must be 0..63")
        if self.socket_rcvbuf < 0:
            raise RelayError("socket_rcvbuf must not be negative")

    @classmethod
    def from_media(cls, media: MediaSection, default_advertised: str) -> RelayConfig:
        """Map the gateway's ``[media]`` section; ``default_advertised`` is used when
        ``advertised_address`` is empty (the gateway resolves "this host's address" once,
        for SIP and media alike)."""
        advertised = media.advertised_address or default_advertised
        return cls(
            bind_host=media.bind,
            advertised_host=advertised,
            port_min=media.port_min,
            port_max=media.port_max,
            rtp_timeout_s=float(media.rtp_timeout_s),
            workers=media.workers,
            dscp=media.dscp,
        )
