"""Settings come from the environment; with nothing set, from the embedded servers `make run`
started (or the usual local addresses)."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from controlplane.environment import (
    ConfigurationError,
    broker_config,
    database_config,
    env_bool,
    secret_key,
)

ROOT = Path(__file__).resolve().parents[2]

SETTINGS_PROBE = """
import json, django
from django.conf import settings
django.setup()
print(json.dumps({
    "engine": settings.DATABASES["default"]["ENGINE"],
    "name": str(settings.DATABASES["default"]["NAME"]),
    "host": settings.DATABASES["default"].get("HOST", ""),
    "broker": settings.CELERY_BROKER_URL,
    "results": settings.CELERY_RESULT_BACKEND,
    "transport": settings.CELERY_BROKER_TRANSPORT_OPTIONS,
    "debug": settings.DEBUG,
    "session_secure": settings.SESSION_COOKIE_SECURE,
    "csrf_secure": settings.CSRF_COOKIE_SECURE,
    "ssl_redirect": settings.SECURE_SSL_REDIRECT,
    "hsts": settings.SECURE_HSTS_SECONDS,
    "hosts": settings.ALLOWED_HOSTS,
    "log_format": settings.LOG_FORMAT,
}))
"""


def load_settings(tmp_path: Path, **env: str) -> dict[str, object]:
    """Load the real settings module in a fresh process with exactly `env` configured."""
    clean = {
        key: value
        for key, value in os.environ.items()
        if key not in {"DATABASE_URL", "REDIS_URL", "SECRET_KEY", "DEBUG", "ALLOWED_HOSTS"}
    }
    clean.update({"ESCAPEMENT_VAR_DIR": str(tmp_path / "var"), **env})
    completed = subprocess.run(
        [sys.executable, "-c", SETTINGS_PROBE],
        cwd=ROOT,
        env={**clean, "DJANGO_SETTINGS_MODULE": "controlplane.settings"},
        capture_output=True,
        text=True,
        check=True,
    )
    result: dict[str, object] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def test_settings__nothing_set__postgres_and_redis_at_their_usual_addresses(
    tmp_path: Path,
) -> None:
    # Given an environment with no configuration and no embedded server running
    # When the settings load
    loaded = load_settings(tmp_path)
    # Then the product still means PostgreSQL and Redis: there is no other engine
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert (loaded["host"], loaded["name"]) == ("127.0.0.1", "escapement")
    assert loaded["broker"] == loaded["results"] == "redis://127.0.0.1:6379/0"
    # And production safety holds by default
    assert loaded["debug"] is False
    assert loaded["log_format"] == "json"
    assert loaded["session_secure"] is False  # not told it runs behind TLS


def test_settings__embedded_servers_running__their_urls(tmp_path: Path) -> None:
    # Given the embedded servers of `make run` running, named in var/services/urls.json
    services = tmp_path / "var" / "services"
    services.mkdir(parents=True)
    (services / "urls.json").write_text(
        json.dumps(
            {
                "DATABASE_URL": "postgres://escapement:pw@127.0.0.1:41001/escapement",
                "REDIS_URL": "redis://:pw@127.0.0.1:41002/0",
            }
        )
    )
    # When a command loads the settings with nothing set
    loaded = load_settings(tmp_path)
    # Then it finds them
    assert loaded["host"] == "127.0.0.1"
    assert loaded["broker"] == "redis://:pw@127.0.0.1:41002/0"


def test_database_config__not_postgres__names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="DATABASE_URL: expected a postgres://"):
        database_config({"DATABASE_URL": "sqlite:///x.db"}, tmp_path)


def test_settings__urls_set__postgres_and_redis(tmp_path: Path) -> None:
    loaded = load_settings(
        tmp_path,
        DATABASE_URL="postgres://app:secret@db.internal:5433/escapement",
        REDIS_URL="redis://cache.internal:6380/2",
        ALLOWED_HOSTS="escapement.example.com, ops.example.com",
    )
    assert loaded["engine"] == "django.db.backends.postgresql"
    assert loaded["name"] == "escapement"
    assert loaded["host"] == "db.internal"
    assert loaded["broker"] == "redis://cache.internal:6380/2"
    assert loaded["results"] == "redis://cache.internal:6380/2"
    assert loaded["hosts"] == ["escapement.example.com", "ops.example.com"]


def test_settings__behind_tls__secure_cookies_and_redirect(tmp_path: Path) -> None:
    loaded = load_settings(tmp_path, BEHIND_TLS="true")
    assert loaded["session_secure"] is True
    assert loaded["csrf_secure"] is True
    assert loaded["ssl_redirect"] is True
    assert loaded["hsts"] == 31536000


def test_settings__debug_in_development__readable_logs(tmp_path: Path) -> None:
    loaded = load_settings(tmp_path, DEBUG="true")
    assert loaded["debug"] is True
    assert loaded["log_format"] == "text"


def test_manage__bad_environment_value__one_readable_line(tmp_path: Path) -> None:
    # Given a DEBUG value that is neither true nor false
    env = {**os.environ, "DEBUG": "maybe", "ESCAPEMENT_VAR_DIR": str(tmp_path)}
    # When a command runs
    completed = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True
    )
    # Then it exits non-zero with one line naming the variable and the reason
    assert completed.returncode == 2
    assert completed.stderr.strip() == (
        "configuration error: DEBUG: expected true or false, got 'maybe'"
    )


def test_env_bool__accepts_common_words() -> None:
    assert env_bool({"X": "Yes"}, "X", default=False) is True
    assert env_bool({"X": "off"}, "X", default=True) is False
    assert env_bool({}, "X", default=True) is True


def test_database_config__unknown_scheme__names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^DATABASE_URL: "):
        database_config({"DATABASE_URL": "nosuchdb://x/y"}, tmp_path)


def test_broker_config__not_a_redis_url__names_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^REDIS_URL: expected a redis:// address"):
        broker_config({"REDIS_URL": "amqp://guest@localhost//"}, tmp_path)


def test_secret_key__unset__generated_once_and_private(tmp_path: Path) -> None:
    first = secret_key({}, tmp_path)
    second = secret_key({}, tmp_path)
    assert first == second
    assert len(first) >= 50
    mode = stat.S_IMODE((tmp_path / "secret_key").stat().st_mode)
    assert mode == 0o600


def test_secret_key__unset__processes_starting_together_share_one(tmp_path: Path) -> None:
    # Eight processes (here threads) starting at once on a fresh machine
    start = threading.Barrier(8)
    keys: list[str] = []

    def boot() -> None:
        start.wait()
        keys.append(secret_key({}, tmp_path))

    threads = [threading.Thread(target=boot) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    # All use one whole key, the one on disk, and no draft is left behind
    assert len(keys) == 8
    assert len(set(keys)) == 1
    assert len(keys[0]) >= 50
    assert (tmp_path / "secret_key").read_text() == keys[0]
    assert [entry.name for entry in tmp_path.iterdir()] == ["secret_key"]


def test_secret_key__too_short__refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=r"^SECRET_KEY: must be at least 32"):
        secret_key({"SECRET_KEY": "short"}, tmp_path)


def test_beat_schedule__hosted_runs_swept__steps_resume_after_a_decision() -> None:
    # Given the scheduler's schedule
    from django.conf import settings

    # Then the runtime sweep is on it, often: a run held for a person resumes once decided
    entry = settings.CELERY_BEAT_SCHEDULE["runtime-sweep"]
    assert entry["task"] == "runtime.sweep"
    assert float(str(entry["schedule"])) <= 10
