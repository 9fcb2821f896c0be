"""Where tokens live on disk: the signing secret and the issued/revoked list, under data_dir.

The secret is made at first use (never a default) with mode 0600. The token list is a small
JSON file replaced atomically under an exclusive lock, so the CLI (another process) and the
running gateway can share it; the gateway notices changes by the file's identity
(inode, size, mtime) and reloads the revoked ids.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path

from media.tv import TvError
from media.tv.tokens import TOKEN_ID, TokenRejected, decode, issue

SECRET_BYTES = 32


class TokenStoreError(TvError):
    """A token operation that cannot be done (unknown id, unreadable store)."""


@dataclass(frozen=True)
class TokenRecord:
    token_id: str
    tenant: str
    created: int
    expires: int
    revoked: int | None = None


class TokenStore:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.secret_path = directory / "token.key"
        self.list_path = directory / "tokens.json"
        self._lock_path = directory / "tokens.lock"

    # -- secret -------------------------------------------------------------------------------

    def secret(self) -> bytes:
        """The signing secret, created on first use."""
        try:
            data = self.secret_path.read_bytes()
        except FileNotFoundError:
            data = self._create_secret()
        if len(data) < SECRET_BYTES:
            raise TokenStoreError(f"{self.secret_path} is truncated; remove it to make a new one")
        return data

    def _create_secret(self) -> bytes:
        self.directory.mkdir(parents=True, exist_ok=True)
        # Written in full under a private name, then linked into place: another process
        # sees either no secret or the whole one, and the first link wins.
        tmp = self.directory / f".token.key.{os.getpid()}.{secrets.token_hex(4)}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(SECRET_BYTES))
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, self.secret_path)
            except FileExistsError:
                pass
        finally:
            tmp.unlink(missing_ok=True)
        return self.secret_path.read_bytes()

    # -- list ---------------------------------------------------------------------------------

    def records(self) -> list[TokenRecord]:
        try:
            raw = json.loads(self.list_path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return []
        except (OSError, ValueError) as exc:
            raise TokenStoreError(f"cannot read {self.list_path}: {exc}") from None
        return [TokenRecord(**item) for item in raw.get("tokens", [])]

    def revoked_ids(self) -> frozenset[str]:
        return frozenset(r.token_id for r in self.records() if r.revoked is not None)

    def identity(self) -> tuple[int, int, int] | None:
        """Changes whenever the list is rewritten (cheap to poll)."""
        try:
            st = self.list_path.stat()
        except FileNotFoundError:
            return None
        return (st.st_ino, st.st_size, st.st_mtime_ns)

    def create(self, tenant: str, days: int, now: int) -> tuple[str, TokenRecord]:
        secret = self.secret()
        record = TokenRecord(secrets.token_hex(8), tenant.lower(), now, now + days * 86400)
        token = issue(secret, record.tenant, record.expires, record.token_id)
        with self._locked():
            self._write([*self.records(), record])
        return token, record

    def revoke(self, token_or_id: str, now: int) -> TokenRecord:
        token_id = token_or_id.lower() if TOKEN_ID.match(token_or_id.lower()) else None
        claims = None
        if token_id is None:
            try:
                claims = decode(self.secret(), token_or_id)
            except TokenRejected as exc:
                raise TokenStoreError(f"not a token of this gateway ({exc.reason})") from None
            token_id = claims.token_id
        with self._locked():
            records = self.records()
            for i, r in enumerate(records):
                if r.token_id == token_id:
                    if r.revoked is None:
                        records[i] = r = TokenRecord(r.token_id, r.tenant, r.created, r.expires, now)
                        self._write(records)
                    return r
            if claims is None:
                raise TokenStoreError(f"no token with id {token_id}")
            # An authentic token missing from the list (list lost or edited): revoke it anyway.
            record = TokenRecord(token_id, claims.tenant, now, claims.expires, now)
            self._write([*records, record])
            return record

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.directory.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _write(self, records: list[TokenRecord]) -> None:
        tmp = self.list_path.with_suffix(".tmp")
        body = json.dumps({"tokens": [asdict(r) for r in records]}, indent=1)
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(body + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.list_path)
