"""The page's TLS certificate: from config, or the gateway's own (generated at first start).

The gateway has one certificate for SIP over TLS and its HTTPS pages (gateway/tls.py);
``webrtc.certificate`` and ``webrtc.private_key`` name another for the pages only.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterable
from pathlib import Path

from gateway.tls import ensure_certificate, server_context

KEY_FILE = "gateway.key"


def load_or_generate(
    certificate: str, private_key: str, folder: Path, names: Iterable[str]
) -> tuple[ssl.SSLContext, Path, bool]:
    """A server TLS context; the bool says whether a certificate was generated just now."""
    if certificate:
        cert, key = Path(certificate), Path(private_key)
        return server_context((cert, key)), cert, False
    files = ensure_certificate(folder, "Seabridge gateway", list(names))
    return server_context(files), files.certificate, files.generated
