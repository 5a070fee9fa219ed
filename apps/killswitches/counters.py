"""Sliding-window counters for the behavioural firewall, one round trip per proposal.

A window of W seconds is kept as a handful of buckets (W / resolution seconds each); counting
adds one to the current bucket and sums the buckets the window spans. In Redis (REDIS_URL) the
increments, expiries and reads of every window go in one pipeline, so all web processes count
together.

A counter that cannot be reached answers None: the firewall then lets the proposal through
(kill switches do not depend on it) and logs why."""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis
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


class Counters:
    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, health_check_interval=30
        )

    def add(self, subject: str, windows: Sequence[Window], *, bump: bool = True) -> list[int]:
        """Add one to each window's current bucket (unless bump is False) and return each
        window's total."""
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


def _key(subject: str, each: Window, index: int) -> str:
    return f"{KEY_PREFIX}{subject}:{each.name}:{each.bucket}:{index}"


_counters: dict[str, Counters] = {}


def counters() -> Counters:
    """The counters of this process, in Redis at FIREWALL_REDIS_URL."""
    url: str = settings.FIREWALL_REDIS_URL
    found = _counters.get(url)
    if found is None:
        found = Counters(url)
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
