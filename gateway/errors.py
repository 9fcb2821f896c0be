"""The gateway package's own errors (protocol errors live in gateway.sip.errors)."""

from __future__ import annotations


class GatewayError(Exception):
    """Root of errors raised by the gateway's I/O layers."""


class StartupError(GatewayError):
    """The gateway cannot start as configured (a port in use, an unreadable file); the message says why."""
