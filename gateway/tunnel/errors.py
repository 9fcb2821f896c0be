"""The tunnel package's exceptions: one root, a subclass per kind of failure."""

from __future__ import annotations


class TunnelError(Exception):
    """Root of every error the tunnel package raises."""


class FrameError(TunnelError):
    """A datagram that is not a well-formed tunnel frame."""


class AuthenticationFailed(TunnelError):
    """A frame whose AEAD tag does not verify (tampered, or a wrong key)."""


class ControlProtocolError(TunnelError):
    """A control-channel message that breaks the protocol."""


class PeerRefused(TunnelError):
    """A peer whose certificate or identity we do not accept; ``reason`` says why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class PkiError(TunnelError):
    """A certificate operation that cannot be done (bad CSR, wrong name, unreadable file)."""


class FlowRefused(TunnelError):
    """A flow the far end or a hub on the way refused (no route, no such service)."""
