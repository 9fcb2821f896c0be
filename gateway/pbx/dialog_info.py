"""RFC 4235 ``application/dialog-info+xml`` bodies for NOTIFY (``Event: dialog``), from presence.

Busy-lamp phones read one thing from these: is there a dialog, and is it ``early`` (ringing:
blink, offer pickup) or ``confirmed`` (on a call: lamp on). We send full-state documents only
(``state="full"``), so a phone that missed a NOTIFY is right again at the next one. The
``version`` counts NOTIFYs within one subscription (RFC 4235 section 4.1), so the
subscription, not the extension, owns it.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET

from gateway.pbx.presence import ExtensionState

NAMESPACE = "urn:ietf:params:xml:ns:dialog-info"
CONTENT_TYPE = "application/dialog-info+xml"

_DIALOG_STATE = {
    ExtensionState.RINGING: ("early", "recipient"),
    ExtensionState.BUSY: ("confirmed", None),
}


def dialog_info_body(entity: str, state: ExtensionState, version: int, dialog_id: str = "") -> bytes:
    """The document for ``entity`` (e.g. ``sip:2001@hq.acme``) in ``state``.

    Idle, unavailable and unknown extensions have no dialog: an empty full document.
    """
    if version < 0:
        raise ValueError("dialog-info version is a non-negative integer")
    root = ET.Element("dialog-info", {"xmlns": NAMESPACE, "version": str(version), "state": "full", "entity": entity})
    shown = _DIALOG_STATE.get(state)
    if shown is not None:
        dialog_state, direction = shown
        attrs = {"id": dialog_id or _id_from(entity)}
        if direction:
            attrs["direction"] = direction
        dialog = ET.SubElement(root, "dialog", attrs)
        ET.SubElement(dialog, "state").text = dialog_state
    body: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + body


def _id_from(entity: str) -> str:
    # A stable id per extension: the phone matches later NOTIFYs to the same lamp.
    user = entity.partition(":")[2].partition("@")[0]
    return user or "dialog"
