"""A call's billing category from what the SIP service saw of it (sans-I/O).

- ``video``: a video stream was offered and accepted;
- ``bridged``: a browser talked to a phone (one leg is the browser phone's SIP agent);
- ``voice``: anything else (phone to phone, browser to browser audio).
"""

from __future__ import annotations

from collections.abc import Sequence

from gateway.cdr import Category


def call_category(
    kinds: Sequence[str],
    accepted: Sequence[bool],
    caller_is_browser: bool,
    callee_is_browser: bool,
) -> Category:
    """``kinds``: the offer's m= line kinds; ``accepted``: which of them the answer took (same order)."""
    if any(kind == "video" and ok for kind, ok in zip(kinds, accepted, strict=False)):
        return "video"
    if caller_is_browser != callee_is_browser:
        return "bridged"
    return "voice"
