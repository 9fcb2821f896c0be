"""The PBX package's exceptions: one root, ``PbxError``."""

from __future__ import annotations


class PbxError(Exception):
    """Anything the PBX integration cannot do."""


class AmiProtocolError(PbxError):
    """Asterisk sent something that is not AMI, or we were asked to send something unsafe."""


class AmiNotConnected(PbxError):
    """No logged-in AMI connection right now (the client is reconnecting on its own)."""


class AmiActionFailed(PbxError):
    """Asterisk answered an action with an error, or did not answer in time."""

    def __init__(self, action: str, message: str) -> None:
        super().__init__(f"{action}: {message}")
        self.action = action
        self.message = message
