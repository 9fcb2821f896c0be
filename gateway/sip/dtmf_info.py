"""Key presses carried in SIP INFO bodies (application/dtmf-relay, application/dtmf), sans-I/O."""

from __future__ import annotations

_DIGITS = "0123456789*#ABCDabcd"


def info_digit(content_type: str, body: bytes) -> tuple[str, int] | None:
    """(digit, duration ms) from a SIP INFO body (application/dtmf-relay or application/dtmf)."""
    kind = content_type.split(";")[0].strip().lower()
    text = body.decode("utf-8", "replace")
    if kind == "application/dtmf":
        digit = text.strip()[:1]
        return (digit.upper(), 160) if digit and digit in _DIGITS else None
    if kind != "application/dtmf-relay":
        return None
    digit, duration = "", 160
    for line in text.splitlines():
        key, _, value = line.partition("=")
        key, value = key.strip().lower(), value.strip()
        if key == "signal":
            digit = value[:1]
        elif key == "duration" and value.isdigit():
            duration = max(40, min(int(value), 5000))
    if not digit or digit not in _DIGITS:
        return None
    return digit.upper(), duration
