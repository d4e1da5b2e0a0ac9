"""Keyed hashes (HMAC-SHA256) of patient and user ids: countable, never stored in clear.

Patient ids are short and guessable (an MRN), so a plain hash could be reversed by hashing every
candidate; a secret key prevents that for anyone who has the database but not the key. The key
comes from ``CDS_ID_HASH_KEY``; without it, a random key is generated once in
``data_dir/id-hash.key`` (mode 0600) and reused, so a fresh machine never stores ids in clear and
needs no setup. Instances that share one database must share one key, or each would count the same
patient under a different hash: set ``CDS_ID_HASH_KEY`` for them.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import tempfile
from enum import StrEnum
from pathlib import Path

from cds_service.config import Settings

KEY_FILE = "id-hash.key"


class IdKind(StrEnum):
    """What is hashed; part of the message, so equal strings of different kinds hash apart."""

    PATIENT = "patient"
    USER = "user"
    DECISION = "decision"


def _key_from_file(path: Path) -> bytes:
    """Read the key file, creating it atomically (no half-written key) when it does not exist."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temporary = tempfile.mkstemp(dir=path.parent, prefix=".id-hash-")  # created with mode 0600
        try:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32) + "\n")
            # link() fails if another process created the key first; then its key is used.
            os.link(temporary, path)
        except FileExistsError:
            pass
        finally:
            os.unlink(temporary)
    key = path.read_text(encoding="ascii").strip()
    if len(key) < 32:
        raise ValueError(f"{path}: the id-hash key is too short; delete the file to generate a new one")
    return key.encode("ascii")


class IdHasher:
    """HMAC-SHA256 under one secret key. Immutable; share it freely."""

    def __init__(self, key: bytes, source: str) -> None:
        self._key = key
        self.source = source  # where the key came from, for the start-up message (never the key)

    @classmethod
    def from_settings(cls, settings: Settings) -> IdHasher:
        if settings.id_hash_key is not None:
            return cls(settings.id_hash_key.get_secret_value().encode("utf-8"), "CDS_ID_HASH_KEY")
        path = settings.data_dir / KEY_FILE
        return cls(_key_from_file(path), str(path))

    def digest(self, kind: IdKind, *parts: str) -> str:
        """Hex HMAC of ``kind`` and ``parts``; parts are length-prefixed so no two tuples collide."""
        message = "".join(f"{len(p)}:{p}" for p in (kind.value, *parts))
        return hmac.new(self._key, message.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()
