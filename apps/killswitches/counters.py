"""Sliding-window counters for the behavioural firewall, one round trip per proposal.

A window of W seconds is kept as a handful of buckets (W / resolution seconds each); counting
adds one to the current bucket and sums the buckets the window spans. In Redis (REDIS_URL) the
increments, expiries and reads of every window are one script (one command, one answer), so all
web processes count together.

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

    def current(self, now: float) -> int:
        return int(now // self.bucket)


def window(name: str, seconds: int, buckets: int = 10) -> Window:
    return Window(name, seconds, max(1, seconds // buckets))


# One script, so that a proposal costs one short command and one answer however many windows
# and buckets it is counted in. ARGV: 1 to add one (0 to read only), then for each window its
# keys' prefix, its current bucket, how many buckets it spans and the current one's expiry.
# (The script names the bucket keys itself: fine on one Redis server, which is what the
# firewall uses; a Redis Cluster would want them declared.)
_ADD_SCRIPT = """
local bump = ARGV[1] == '1'
local totals = {}
for position = 2, #ARGV, 4 do
  local prefix, current = ARGV[position], tonumber(ARGV[position + 1])
  local spans, expiry = tonumber(ARGV[position + 2]), tonumber(ARGV[position + 3])
  local keys = {}
  for offset = 0, spans - 1 do
    keys[#keys + 1] = prefix .. (current - offset)
  end
  if bump then
    redis.call('INCR', keys[1])
    redis.call('EXPIRE', keys[1], expiry)
  end
  local total = 0
  for _, value in ipairs(redis.call('MGET', unpack(keys))) do
    if value then total = total + tonumber(value) end
  end
  totals[#totals + 1] = total
end
return totals
"""


class Counters:
    def __init__(self, url: str) -> None:
        self._client = redis.Redis.from_url(
            url, socket_timeout=0.25, socket_connect_timeout=0.25, health_check_interval=30
        )
        self._add = self._client.register_script(_ADD_SCRIPT)

    def add(self, subject: str, windows: Sequence[Window], *, bump: bool = True) -> list[int]:
        """Add one to each window's current bucket (unless bump is False) and return each
        window's total, in one script run by Redis."""
        now = time.time()
        args: list[str | int] = [1 if bump else 0]
        for each in windows:
            args.extend(
                (
                    _key(subject, each, ""),
                    each.current(now),
                    each.spans,
                    each.seconds + each.bucket,
                )
            )
        totals = self._add(keys=[], args=args)
        return [int(total) for total in totals]

    def clear(self, subject: str) -> None:
        keys = list(self._client.scan_iter(match=f"{KEY_PREFIX}{subject}:*", count=500))
        if keys:
            self._client.delete(*keys)


def _key(subject: str, each: Window, index: int | str) -> str:
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
