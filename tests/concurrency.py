"""Running one call on many threads at the same moment, for races on real PostgreSQL."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from django.db import connection


def at_once(count: int, call: Callable[[int], Any]) -> list[Any]:
    """Run call(0..count-1) on `count` threads released together by a barrier; return the
    results in order, or raise the first error. Each thread closes its own database connection
    when done, so that the test database can be flushed and dropped afterwards."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def run(index: int) -> None:
        try:
            barrier.wait(timeout=30)
            results[index] = call(index)
        except BaseException as exc:  # noqa: BLE001 (re-raised on the test's thread below)
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=(index,)) for index in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not [thread for thread in threads if thread.is_alive()], "a thread hung"
    if errors:
        raise errors[0]
    return results
