"""The browser phone package's one exception root."""

from __future__ import annotations


class WebRtcError(Exception):
    """Root of every error raised by gateway.webrtc."""


class TokenRejected(WebRtcError):
    """A session token that is malformed, forged or expired; ``reason`` says which (for logs only)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class SignallingError(WebRtcError):
    """A WebSocket message the protocol does not allow; ``code`` goes back to the page."""

    def __init__(self, message: str, code: str = "bad_message") -> None:
        super().__init__(message)
        self.code = code


class AiortcChanged(WebRtcError):
    """aiortc no longer has an internal this package relies on (see aiortc_glue)."""
