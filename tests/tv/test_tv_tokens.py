"""Viewing tokens: signing, expiry, revocation, and their store under data_dir."""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest

from media.tv.tokens import TokenRejected, decode, issue, verify
from media.tv.tokenstore import TokenStore, TokenStoreError

SECRET = b"k" * 32


def test_round_trip() -> None:
    token = issue(SECRET, "Acme", expires=2_000_000_000)
    claims = verify(SECRET, token, now=1_900_000_000, revoked=set())
    assert claims.tenant == "acme" and claims.expires == 2_000_000_000 and len(claims.token_id) == 16
    assert "/" not in token and "?" not in token and "=" not in token


@pytest.mark.parametrize(
    "mangle",
    [
        lambda t: t[:-2] + ("AA" if t[-2:] != "AA" else "BB"),  # signature changed
        lambda t: t[:10] + ("x" if t[10] != "x" else "y") + t[11:],  # payload changed
        lambda t: t[:20],  # truncated
        lambda t: t + "%2F..",  # junk
        lambda t: "",
    ],
)
def test_tampered_tokens_are_refused(mangle) -> None:  # type: ignore[no-untyped-def]
    token = issue(SECRET, "acme", expires=2_000_000_000)
    with pytest.raises(TokenRejected) as info:
        verify(SECRET, mangle(token), now=1_900_000_000, revoked=set())
    assert info.value.status == 403


def test_other_secret_expiry_and_revocation() -> None:
    token = issue(SECRET, "acme", expires=2_000_000_000)
    with pytest.raises(TokenRejected, match="signature"):
        verify(b"z" * 32, token, now=0, revoked=set())
    with pytest.raises(TokenRejected, match="expired"):
        verify(SECRET, token, now=2_000_000_000, revoked=set())
    tid = decode(SECRET, token).token_id
    with pytest.raises(TokenRejected, match="revoked"):
        verify(SECRET, token, now=0, revoked={tid})


def test_store_makes_a_private_secret_once(tmp_path: Path) -> None:
    store = TokenStore(tmp_path / "tv")
    results: list[bytes] = []
    threads = [threading.Thread(target=lambda: results.append(store.secret())) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results[0]) == 32
    assert stat.S_IMODE(os.stat(store.secret_path).st_mode) == 0o600
    assert TokenStore(tmp_path / "tv").secret() == results[0]
    assert TokenStore(tmp_path / "other").secret() != results[0]


def test_store_create_list_revoke(tmp_path: Path) -> None:
    store = TokenStore(tmp_path)
    token, record = store.create("ACME", days=30, now=1_000)
    assert record.tenant == "acme" and record.expires == 1_000 + 30 * 86400
    assert verify(store.secret(), token, now=2_000, revoked=store.revoked_ids()).tenant == "acme"
    before = store.identity()
    store.revoke(record.token_id, now=3_000)
    assert store.identity() != before
    assert store.revoked_ids() == {record.token_id}
    with pytest.raises(TokenRejected):
        verify(store.secret(), token, now=4_000, revoked=store.revoked_ids())
    # Revoking by the token itself works too and is idempotent.
    assert store.revoke(token, now=5_000).revoked == 3_000
    with pytest.raises(TokenStoreError):
        store.revoke("0123456789abcdef", now=0)
    with pytest.raises(TokenStoreError):
        store.revoke(issue(b"q" * 32, "acme", 9), now=0)
