"""Dialled numbers as tariffs see them: digits without '+' or international prefix, or '@user'."""

from __future__ import annotations

import re

_PHONE = re.compile(r"^\+?[0-9*#]+$")


def normalize_number(callee: str, international_prefix: str = "00") -> str:
    """'sip:+8613800000000@gw' -> '8613800000000'; '0086...' -> '86...'; 'sip:bob@acme' -> '@bob'."""
    user = callee.strip()
    for scheme in ("sips:", "sip:", "tel:"):
        if user.lower().startswith(scheme):
            user = user[len(scheme) :]
            break
    user = user.split("@", 1)[0].split(";", 1)[0]
    user = user.replace("-", "").replace(" ", "").replace(".", "") if _PHONE.match(user.replace("-", "")) else user
    if not _PHONE.match(user):
        return "@" + user
    if user.startswith("+"):
        return user[1:]
    if international_prefix and user.startswith(international_prefix):
        return user[len(international_prefix) :]
    return user
