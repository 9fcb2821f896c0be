"""Per-packet AEAD: AES-256-GCM, nonce = IV xor link sequence, the header as associated data.

A nonce never repeats under one key because the sequence only grows and every key
generation starts a fresh key (see ``keys``).
"""

from __future__ import annotations

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from gateway.tunnel.errors import AuthenticationFailed

KEY_SIZE = 32
IV_SIZE = 12


class PacketKey:
    __slots__ = ("_aead", "_iv")

    def __init__(self, key: bytes, iv: bytes) -> None:
        if len(key) != KEY_SIZE or len(iv) != IV_SIZE:
            raise ValueError("AES-256-GCM needs a 32-byte key and a 12-byte IV")
        self._aead = AESGCM(key)
        self._iv = int.from_bytes(iv, "big")

    def _nonce(self, seq: int) -> bytes:
        return (self._iv ^ seq).to_bytes(IV_SIZE, "big")

    def seal(self, seq: int, header: bytes, plaintext: bytes) -> bytes:
        """``header`` + ciphertext + tag: the datagram to send."""
        return header + self._aead.encrypt(self._nonce(seq), plaintext, header)

    def open(self, seq: int, header: bytes, sealed: bytes) -> bytes:
        try:
            return self._aead.decrypt(self._nonce(seq), sealed, header)
        except InvalidTag:
            raise AuthenticationFailed("AEAD tag does not verify") from None
