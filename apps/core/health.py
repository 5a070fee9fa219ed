"""Readiness checks for /healthz: is PostgreSQL reachable, is the broker (Redis or Valkey)
reachable, does at least one worker answer. The first two name the server that answered and its
version. Each check reports its own status and never raises."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import redis
from celery import Celery
from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone
from kombu.exceptions import KombuError

from apps.core.models import Heartbeat

logger = logging.getLogger(__name__)

# The scheduler beats every 60 s; three missed beats is stale.
SCHEDULER_STALE_AFTER = timedelta(minutes=3)


@dataclass
class CheckResult:
    ok: bool
    detail: str
    duration_ms: float
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "detail": self.detail, "duration_ms": self.duration_ms, **self.extra}


def _elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 1)


def check_database() -> CheckResult:
    """Reachable, and which server answered: "PostgreSQL 17.5"."""
    started = time.perf_counter()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT current_setting('server_version_num')::int")
            (version,) = cursor.fetchone()
    except DatabaseError as exc:
        logger.warning("health: database unreachable: %s", type(exc).__name__)
        return CheckResult(False, f"unreachable ({type(exc).__name__})", _elapsed_ms(started))
    detail = f"PostgreSQL {version // 10000}.{version % 10000}"
    return CheckResult(True, detail, _elapsed_ms(started))


def _broker_server(conn: Any) -> str:
    """Which server the broker is, from its INFO: "Valkey 8.1.1" or "Redis 7.4.2" (Valkey also
    reports a redis_version, the Redis version it is compatible with)."""
    try:
        with conn.default_channel.conn_or_acquire() as client:
            info = client.info("server")
    except redis.ResponseError:  # INFO refused (an ACL without it): reachable all the same
        return "Redis or Valkey"
    if "valkey_version" in info:
        return f"Valkey {info['valkey_version']}"
    return f"Redis {info['redis_version']}"


def check_broker_and_workers(app: Celery, timeout: float) -> tuple[CheckResult, CheckResult]:
    """Connect to the broker, then ping the workers over that same connection (a fresh one, not
    the pooled connection, so that the answer reflects the broker as configured now)."""
    started = time.perf_counter()
    with app.connection_for_write() as conn:
        failures: tuple[type[BaseException], ...] = (KombuError, OSError, *conn.connection_errors)
        try:
            conn.ensure_connection(max_retries=1, interval_start=0, interval_step=1, timeout=2)
            server = _broker_server(conn)
        except failures as exc:
            logger.warning("health: broker unreachable: %s", type(exc).__name__)
            broker = CheckResult(False, f"unreachable ({type(exc).__name__})", _elapsed_ms(started))
            # Without a broker no ping can travel; say so instead of waiting for the timeout.
            return broker, CheckResult(False, "not checked: broker unreachable", 0.0)
        broker = CheckResult(True, server, _elapsed_ms(started))
        started = time.perf_counter()
        try:
            # Readiness needs one answer: stop listening at the first instead of waiting out
            # the timeout for workers that may or may not exist.
            replies = app.control.ping(timeout=timeout, limit=1, connection=conn)
        except failures as exc:
            logger.warning("health: worker ping failed: %s", type(exc).__name__)
            failed = CheckResult(False, f"ping failed ({type(exc).__name__})", _elapsed_ms(started))
            return broker, failed
    workers = sorted(name for reply in replies or [] for name in reply)
    if not workers:
        return broker, CheckResult(
            False, f"no worker answered within {timeout:g}s", _elapsed_ms(started)
        )
    answering = CheckResult(
        True, f"{len(workers)} answering", _elapsed_ms(started), extra={"workers": workers}
    )
    return broker, answering


def scheduler_status() -> dict[str, Any]:
    """Informational: when the scheduler last beat. Not part of the 200/503 verdict."""
    try:
        beat = Heartbeat.objects.filter(component="scheduler").first()
    except DatabaseError:
        return {"status": "unknown"}
    if beat is None:
        return {"status": "unknown"}
    fresh = timezone.now() - beat.last_seen < SCHEDULER_STALE_AFTER
    return {"status": "ok" if fresh else "stale", "last_seen": beat.last_seen.isoformat()}


def health_report(app: Celery) -> tuple[bool, dict[str, Any]]:
    database = check_database()
    broker, workers = check_broker_and_workers(app, timeout=settings.HEALTHZ_WORKER_TIMEOUT)
    healthy = database.ok and broker.ok and workers.ok
    report = {
        "status": "ok" if healthy else "unavailable",
        "checks": {
            "database": database.as_dict(),
            "broker": broker.as_dict(),
            "workers": workers.as_dict(),
        },
        "scheduler": scheduler_status() if database.ok else {"status": "unknown"},
    }
    return healthy, report
