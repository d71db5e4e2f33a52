"""The key vault: API keys encrypted at rest, and the keyed hash that names their owner.

The engine must resume runs after a restart, so it keeps each API key, encrypted
with Fernet (AES-CBC plus HMAC-SHA256, from ``cryptography``) under a key derived from the server
secret. The secret comes from ``TASKDECK_SECRET_KEY`` or, failing that, from a
file beside the database, generated once with mode 0600. The owner of a task is
HMAC-SHA256(secret, key): stable, and useless to anyone without the secret.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import secrets
from pathlib import Path

from cryptography.fernet import Fernet, InvalidToken
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

__all__ = ["KeyVault", "VaultError", "mask_key"]

SECRET_FILE = "taskdeck.secret"


class VaultError(RuntimeError):
    """A stored key could not be decrypted (the server secret changed?)."""


def mask_key(api_key: str) -> str:
    """What people may see of a key: its last four characters."""
    return "…" + api_key[-4:] if len(api_key) > 4 else "…"


def _derive(secret: bytes, purpose: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=purpose).derive(secret)


class KeyVault:
    """Encrypts, decrypts and names API keys. Never logs or returns a key in clear except to its caller."""

    def __init__(self, secret: str) -> None:
        raw = secret.encode()
        self._fernet = Fernet(base64.urlsafe_b64encode(_derive(raw, b"taskdeck api-key encryption")))
        self._raw = raw
        self._owner_key = _derive(raw, b"taskdeck owner hash")

    @classmethod
    def open(cls, secret: str | None, db_path: Path) -> KeyVault:
        """The vault for ``secret``, or for the secret file beside ``db_path`` (created if missing)."""
        if secret:
            return cls(secret)
        path = db_path.parent / SECRET_FILE
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return cls(path.read_text().strip())
        with os.fdopen(fd, "w") as handle:
            handle.write(secrets.token_urlsafe(48))
        return cls(path.read_text().strip())

    def owner(self, api_key: str) -> str:
        """The keyed hash that owns this key's tasks (hex, 64 characters)."""
        return hmac.new(self._owner_key, api_key.encode(), hashlib.sha256).hexdigest()

    def derive(self, purpose: bytes) -> bytes:
        """A 32-byte key for ``purpose``, derived from the server secret (HKDF), unrelated to every other."""
        return _derive(self._raw, purpose)

    def encrypt(self, api_key: str) -> bytes:
        return self._fernet.encrypt(api_key.encode())

    def decrypt(self, token: bytes) -> str:
        try:
            return self._fernet.decrypt(token).decode()
        except InvalidToken:
            raise VaultError("a stored API key cannot be decrypted: was TASKDECK_SECRET_KEY changed?") from None
