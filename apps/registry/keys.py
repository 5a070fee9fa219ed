"""Agent API keys: `esk_<prefix>_<secret>`. The prefix finds the row; only the SHA-256 digest of
the whole key is stored and compared in constant time."""

from __future__ import annotations

import hashlib
import hmac
import secrets

KEY_PREFIX = "esk"


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def new_key() -> tuple[str, str, str]:
    """(full key, prefix, digest). The full key is returned once and never stored."""
    prefix = secrets.token_hex(6)
    key = f"{KEY_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    return key, prefix, key_digest(key)


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    parts = key.split("_", 2)
    if len(parts) != 3 or parts[0] != KEY_PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1]


def digest_matches(key: str, digest: str) -> bool:
    return hmac.compare_digest(key_digest(key), digest)
