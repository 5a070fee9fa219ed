"""Reading configuration from the environment.

Settings are computed by small pure functions over a mapping so that tests can check the embedded
default and the production configuration without reloading Django.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dj_database_url

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


def database_config(env: Mapping[str, str], var_dir: Path) -> dict[str, Any]:
    """`DATABASE_URL` when set, else the embedded SQLite file under `var/`."""
    url = env.get("DATABASE_URL", "").strip()
    if not url:
        return {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": str(var_dir / "escapement.sqlite3"),
            # The embedded default serves web, worker and beat from one file: wait for the
            # writer rather than failing with "database is locked".
            "OPTIONS": {
                "timeout": 20,
                "transaction_mode": "IMMEDIATE",
                "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
            },
        }
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
    embedded: bool
    # Folders the embedded broker keeps its messages, bindings and results in.
    folders: tuple[Path, ...] = ()


def broker_config(env: Mapping[str, str], var_dir: Path) -> BrokerConfig:
    """Redis when `REDIS_URL` is set, else kombu's filesystem transport under `var/`.

    The filesystem transport needs no server: producers and consumers share one folder of message
    files, and a control folder holds the fanout bindings that worker pings travel on.
    """
    redis_url = env.get("REDIS_URL", "").strip()
    if redis_url:
        if not redis_url.startswith(("redis://", "rediss://", "unix://")):
            raise ConfigurationError(f"REDIS_URL: expected a redis:// address, got {redis_url!r}")
        return BrokerConfig(
            broker_url=redis_url,
            result_backend=redis_url,
            # How long a taken, unacknowledged task (its worker died) waits before another
            # worker gets it again.
            transport_options={
                "visibility_timeout": env_float(env, "CELERY_VISIBILITY_TIMEOUT", 3600.0),
                "socket_connect_timeout": 5,
            },
            embedded=False,
        )
    root = (var_dir / "broker").resolve()
    queue_dir, control_dir, results_dir = root / "queue", root / "control", root / "results"
    return BrokerConfig(
        broker_url="filesystem://localhost/",
        result_backend=results_dir.as_uri(),
        transport_options={
            "data_folder_in": str(queue_dir),
            "data_folder_out": str(queue_dir),
            "control_folder": str(control_dir),
            "polling_interval": 0.1,
        },
        embedded=True,
        folders=(queue_dir, control_dir, results_dir),
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
    path = var_dir / "secret_key"
    if path.exists():
        return path.read_text().strip()
    var_dir.mkdir(parents=True, exist_ok=True)
    # Written whole to a file of this process's own, then linked into place: processes starting
    # together on a fresh machine (web, worker, scheduler) never read a half-written key, and
    # the first link wins, so all of them use the same one.
    draft = var_dir / f".secret_key.{os.getpid()}.{secrets.token_hex(4)}"
    descriptor = os.open(draft, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w") as out:
        out.write(secrets.token_urlsafe(50))
    try:
        os.link(draft, path)
    except FileExistsError:
        pass  # another process's key is in place
    finally:
        draft.unlink()
    return path.read_text().strip()
