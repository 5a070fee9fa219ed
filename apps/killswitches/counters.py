"""Sliding-window counters for the behavioural firewall, one round trip per proposal.

A window of W seconds is kept as a handful of buckets (W / resolution seconds each); counting
adds one to the current bucket and sums the buckets the window spans. In Redis (REDIS_URL) the
increments, expiries and reads of every window go in one pipeline, so all web processes count
together; on the embedded default (no Redis) the counts live in this process, which is the one
process serving the gate there.

A counter that cannot be reached answers None: the firewall then lets the proposal through
(kill switches do not depend on it) and logs why."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from django.conf import settings

logger = logging.getLogger(__name__)

KEY_PREFIX = "escapement:firewall:"


@dataclass(frozen=True)
class Window:
    """`name` counted over `seconds`, in buckets of `bucket` seconds."""

    name: str
    seconds: int
    bucket: int

    @property
    def spans(self) -> int:
        return max(1, -(-self.seconds // self.bucket))

    def buckets_at(self, now: float) -> list[int]:
        current = int(now // self.bucket)
        return [current - offset for offset in range(self.spans)]


def window(name: str, seconds: int, buckets: int = 10) -> Window:
    return Window(name, seconds, max(1, seconds // buckets))


class Counters(Protocol):
    def add(self, subject: str, windows: Sequence[Window], *, bump: bool = True) -> list[int]:
        """Add one to each window's current bucket (unless bump is False) and return each
        window's total."""
        ...

    def clear(self, subject: str) -> None: ...


class RedisCounters:
    def __init__(self, url: str) -> None:
        import redis

        self._client = redis.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, health_check_interval=30
        )

    def add(self, subject: str, windows: Sequence[Window], *, bump: bool = True) -> list[int]:
        now = time.time()
        pipe = self._client.pipeline(transaction=False)
        for each in windows:
            keys = [_key(subject, each, index) for index in each.buckets_at(now)]
            if bump:
                pipe.incr(keys[0])
                pipe.expire(keys[0], each.seconds + each.bucket)
            pipe.mget(keys)
        answers = pipe.execute()
        totals = []
        step = 3 if bump else 1
        for position in range(len(windows)):
            values = answers[position * step + step - 1]
            totals.append(sum(int(value) for value in values if value is not None))
        return totals

    def clear(self, subject: str) -> None:
        keys = list(self._client.scan_iter(match=f"{KEY_PREFIX}{subject}:*", count=500))
        if keys:
            self._client.delete(*keys)


class LocalCounters:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._counts: dict[str, tuple[int, float]] = {}

    def add(self, subject: str, windows: Sequence[Window], *, bump: bool = True) -> list[int]:
        now = time.time()
        totals = []
        with self._lock:
            for each in windows:
                keys = [_key(subject, each, index) for index in each.buckets_at(now)]
                if bump:
                    count, _ = self._counts.get(keys[0], (0, 0.0))
                    self._counts[keys[0]] = (count + 1, now + each.seconds + each.bucket)
                totals.append(
                    sum(
                        count
                        for count, expires in (self._counts.get(key, (0, 0.0)) for key in keys)
                        if expires > now
                    )
                )
            if len(self._counts) > 100_000:
                self._counts = {k: v for k, v in self._counts.items() if v[1] > now}
        return totals

    def clear(self, subject: str) -> None:
        with self._lock:
            for key in [key for key in self._counts if key.startswith(f"{KEY_PREFIX}{subject}:")]:
                del self._counts[key]


def _key(subject: str, each: Window, index: int) -> str:
    return f"{KEY_PREFIX}{subject}:{each.name}:{each.bucket}:{index}"


_counters: dict[str, Any] = {}


def counters() -> Counters:
    """The counters of this process (Redis when configured)."""
    url: str = settings.FIREWALL_REDIS_URL
    found: Counters | None = _counters.get(url)
    if found is None:
        found = RedisCounters(url) if url else LocalCounters()
        _counters[url] = found
    return found


def count(subject: str, windows: Sequence[Window], *, bump: bool = True) -> list[int] | None:
    try:
        return counters().add(subject, windows, bump=bump)
    except Exception as exc:  # noqa: BLE001 (any failure of the store: the gate must not fail)
        # One line per proposal, no traceback: the cause (Redis down, say) is the same for all.
        logger.warning(
            "firewall counters unavailable (%s: %s); proposal let through uncounted",
            type(exc).__name__,
            exc,
        )
        return None
