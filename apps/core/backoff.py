"""How long to wait before trying a failed call again: the one rule for tool calls, hosted
agent steps and model provider calls alike."""

from __future__ import annotations

import random


def backoff(attempt: int, *, base: float = 0.5, cap: float = 30.0) -> float:
    """Seconds before retry number `attempt` (1-based): base, then twice as long each time, at
    most cap, each spread by +-20 % so that workers which failed together do not all come back
    in the same instant. The defaults suit a call to a system of record; a caller that sleeps
    inside a request uses a smaller cap, one whose retry is a queued task may use a larger one."""
    delay: float = min(base * 2.0 ** (attempt - 1), cap)
    return delay * random.uniform(0.8, 1.2)  # noqa: S311 (jitter, not a secret)
