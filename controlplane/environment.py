"""Reading configuration from the environment.

Settings are computed by small pure functions over a mapping so that tests can check the
configuration without reloading Django.
"""

from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dj_database_url
from escapement_client.transparency import (
    TransparencyError,
    signer_key_generate,
    verifier_key_for,
)

TRUE_WORDS = frozenset({"1", "true", "yes", "on"})
FALSE_WORDS = frozenset({"0", "false", "no", "off", ""})


class ConfigurationError(Exception):
    """An environment variable holds a value the product cannot use."""


def env_bool(env: Mapping[str, str], name: str, default: bool) -> bool:
    raw = env.get(name)
    if raw is None:
        return default
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if word in FALSE_WORDS:
        return False
    raise ConfigurationError(f"{name}: expected true or false, got {raw!r}")


def env_list(env: Mapping[str, str], name: str, default: list[str]) -> list[str]:
    raw = env.get(name)
    if raw is None:
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def env_float(env: Mapping[str, str], name: str, default: float) -> float:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return float(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected a number, got {raw!r}") from None


def env_int(env: Mapping[str, str], name: str, default: int) -> int:
    raw = env.get(name)
    if raw is None or not raw.strip():
        return default
    try:
        return int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected a whole number, got {raw!r}") from None


# While the embedded servers run (`make run`), controlplane/embedded.py names them here, so that
# a command started by hand in another terminal finds them without being told.
EMBEDDED_URLS = Path("services") / "urls.json"
# Where production's usual servers would be: the default when nothing else is named.
DEFAULT_DATABASE_URL = "postgres://escapement@127.0.0.1:5432/escapement"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"


def embedded_urls(var_dir: Path) -> dict[str, str]:
    """The URLs of the embedded servers running under `var_dir`, if any run."""
    path = var_dir / EMBEDDED_URLS
    try:
        urls = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {name: value for name, value in urls.items() if isinstance(value, str)}


def _url(env: Mapping[str, str], var_dir: Path, name: str, default: str) -> str:
    return env.get(name, "").strip() or embedded_urls(var_dir).get(name, "") or default


def database_config(env: Mapping[str, str], var_dir: Path) -> dict[str, Any]:
    """PostgreSQL at `DATABASE_URL`; when unset, the embedded server `make run` started (or,
    with none running, PostgreSQL's usual local address)."""
    url = _url(env, var_dir, "DATABASE_URL", DEFAULT_DATABASE_URL)
    if not url.startswith(("postgres://", "postgresql://")):
        raise ConfigurationError(f"DATABASE_URL: expected a postgres:// address, got {url!r}")
    try:
        config: dict[str, Any] = dict(
            dj_database_url.parse(url, conn_max_age=60, conn_health_checks=True)
        )
    except ValueError as exc:
        raise ConfigurationError(f"DATABASE_URL: {exc}") from None
    return config


@dataclass(frozen=True)
class BrokerConfig:
    broker_url: str
    result_backend: str
    transport_options: dict[str, Any]


def broker_config(env: Mapping[str, str], var_dir: Path) -> BrokerConfig:
    """Redis (or Valkey) at `REDIS_URL`; when unset, the embedded server `make run` started
    (or, with none running, Redis's usual local address)."""
    redis_url = _url(env, var_dir, "REDIS_URL", DEFAULT_REDIS_URL)
    if not redis_url.startswith(("redis://", "rediss://", "unix://")):
        raise ConfigurationError(f"REDIS_URL: expected a redis:// address, got {redis_url!r}")
    return BrokerConfig(
        broker_url=redis_url,
        result_backend=redis_url,
        # How long a taken, unacknowledged task (its worker died) waits before another worker
        # gets it again.
        transport_options={
            "visibility_timeout": env_float(env, "CELERY_VISIBILITY_TIMEOUT", 3600.0),
            "socket_connect_timeout": 5,
        },
    )


def secret_key(env: Mapping[str, str], var_dir: Path) -> str:
    """`SECRET_KEY` when set; otherwise a random key kept in `var/secret_key` (mode 0600).

    Generating the key once per installation keeps sessions valid across restarts without ever
    shipping a known key.
    """
    key = env.get("SECRET_KEY", "").strip()
    if key:
        if len(key) < 32:
            raise ConfigurationError("SECRET_KEY: must be at least 32 characters long")
        return key
    return _kept_secret(var_dir / "secret_key", lambda: secrets.token_urlsafe(50))


def _kept_secret(path: Path, make: Callable[[], str]) -> str:
    """The secret kept in `path` (mode 0600), made by `make` the first time."""
    if path.exists():
        return path.read_text().strip()
    path.parent.mkdir(parents=True, exist_ok=True)
    # Written whole to a file of this process's own, then linked into place: processes starting
    # together on a fresh machine (web, worker, scheduler) never read a half-written secret, and
    # the first link wins, so all of them use the same one.
    draft = path.parent / f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(make())
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process's secret is in place
    finally:
        draft.unlink()
    return path.read_text().strip()


# The audit log's origin line when AUDIT_LOG_ORIGIN is unset; also the name of a key made here.
DEFAULT_AUDIT_ORIGIN = "escapement.local/audit"


def audit_signing_key(env: Mapping[str, str], var_dir: Path, origin: str) -> str:
    """The Ed25519 key that signs the audit log's checkpoints, as a signed-note signer key
    (`PRIVATE+KEY+<name>+<key id>+<key>`): `AUDIT_SIGNING_KEY` itself, or the file it names;
    otherwise one made for this installation and kept in `var/audit-signing-key` (mode 0600).
    Keep it off the database's machine: whoever holds it can sign a checkpoint."""
    value = env.get("AUDIT_SIGNING_KEY", "").strip()
    if not value:
        return _kept_secret(var_dir / "audit-signing-key", lambda: signer_key_generate(origin))
    if not value.startswith("PRIVATE+KEY+"):
        path = Path(value)
        if not path.is_file():
            raise ConfigurationError(
                "AUDIT_SIGNING_KEY: expected a signer key (PRIVATE+KEY+...) or the path of a file "
                f"holding one; {value!r} is neither"
            )
        value = path.read_text().strip()
    try:
        verifier_key_for(value)
    except TransparencyError as exc:
        raise ConfigurationError(f"AUDIT_SIGNING_KEY: {exc}") from None
    return value
