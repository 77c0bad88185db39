"""Client and upstream key handling: hashes for the config, fingerprints for everything shown."""

from __future__ import annotations

import hashlib
import hmac
import secrets

CLIENT_KEY_PREFIX = "sk-fg-"


def hash_key(key: str) -> str:
    """The `sha256:<hex>` line a config holds instead of the key itself."""
    return "sha256:" + hashlib.sha256(key.encode()).hexdigest()


def fingerprint(key: str) -> str:
    """A short, stable, non-reversible name for a key, safe for logs, metrics and admin output."""
    return hashlib.sha256(key.encode()).hexdigest()[:10]


def new_client_key() -> str:
    return CLIENT_KEY_PREFIX + secrets.token_urlsafe(32)


class KeyRing:
    """Maps a presented client key to its owner by constant-time comparison of hashes."""

    def __init__(self, owners: dict[str, str]) -> None:
        self._entries = [(h.encode(), owner) for h, owner in owners.items()]

    def owner(self, presented: str) -> str | None:
        digest = hash_key(presented).encode()
        found = None
        for entry, owner in self._entries:
            if hmac.compare_digest(entry, digest):
                found = owner
        return found
