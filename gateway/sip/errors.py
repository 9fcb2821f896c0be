"""The SIP package's exceptions. Protocol errors carry the status to answer with."""

from __future__ import annotations


class SipError(Exception):
    """Root of every error raised by gateway.sip."""


class SipProtocolError(SipError):
    """A message we must refuse; ``status`` is the response code to send (if we can)."""

    def __init__(self, message: str, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


class ParseError(SipProtocolError):
    """Bytes that are not a usable SIP message."""


class TransactionError(SipError):
    """A transaction-layer call that breaks the layer's rules (a bug in the caller)."""
