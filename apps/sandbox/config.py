"""The sandbox's configuration, read from the environment by settings.py (standard library only,
so that settings can call it and tests can check it directly).

The sandbox answers only callers holding its token, `Authorization: Bearer <SANDBOX_TOKEN>`, as
a real system of record answers only holders of the credential it issued. Without
SANDBOX_TOKEN set, the token is derived from SECRET_KEY: every process of one installation (web,
worker, `seed_demo`) then agrees on it with nothing more to configure, and the token reveals
nothing of the key it comes from."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from controlplane.environment import ConfigurationError

TOKEN_MIN_LENGTH = 16
_DERIVATION = b"escapement.sandbox.token"


def sandbox_token(env: Mapping[str, str], *, secret_key: str) -> str:
    """SANDBOX_TOKEN when set (at least TOKEN_MIN_LENGTH characters), else one derived from
    the secret key."""
    token = env.get("SANDBOX_TOKEN", "").strip()
    if token:
        if len(token) < TOKEN_MIN_LENGTH:
            raise ConfigurationError(
                f"SANDBOX_TOKEN: at least {TOKEN_MIN_LENGTH} characters, got {len(token)}"
            )
        return token
    return hmac.new(secret_key.encode(), _DERIVATION, hashlib.sha256).hexdigest()
