"""The media package's exceptions: one root, ``MediaError``."""

from __future__ import annotations


class MediaError(Exception):
    """Root of every error the media package raises."""


class PacketError(MediaError):
    """Bytes that are not a well-formed RTP, RTCP or telephone-event packet."""


class RelayError(MediaError):
    """The relay could not do what was asked (bad argument, closed session, dead worker)."""


class PortsExhausted(RelayError):
    """Every RTP/RTCP port pair of the configured range is in use."""
