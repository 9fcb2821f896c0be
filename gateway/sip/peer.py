"""Where a SIP message came from or goes to: address, port and transport."""

from __future__ import annotations

from dataclasses import dataclass

TRANSPORTS = ("UDP", "TCP", "TLS")


@dataclass(frozen=True, slots=True)
class Peer:
    host: str
    port: int
    transport: str = "UDP"

    @property
    def reliable(self) -> bool:
        """Stream transports deliver or fail: no retransmission timers (RFC 3261 section 17)."""
        return self.transport != "UDP"

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.transport.lower()}:{host}:{self.port}"


def uri_transport_param(transport: str) -> str:
    """The ;transport= parameter a Contact needs so the far end comes back the same way."""
    return "" if transport == "UDP" else f";transport={transport.lower()}"
