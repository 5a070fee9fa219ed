"""The suite on several processes (pytest-xdist, `-n`): each worker process gets Redis to itself.

pytest-django gives each worker a test database of its own (`test_<name>_gw0`, ...). Redis
would still be shared: the firewall's rate counters, the broker's queues and the locks and
caches keep fixed keys, so two workers running tests of the same agent would count each
other's proposals. Loaded with `-p` (pyproject.toml), before Django reads its settings, this
points each worker at a Redis database of its own (db 1 for gw0, 2 for gw1, ...); the Celery
workers and web servers the tests start inherit it. Outside xdist it does nothing."""

from __future__ import annotations

import os
from urllib.parse import urlsplit, urlunsplit

REDIS_DATABASES = 16  # Redis's default `databases`


def worker_redis_url(url: str, worker: str) -> str:
    """`url` with the database of worker `worker` ("gw0" -> 1, "gw1" -> 2, ...)."""
    index = int(worker.removeprefix("gw")) + 1
    if index >= REDIS_DATABASES:
        raise RuntimeError(f"at most {REDIS_DATABASES - 1} test workers share one Redis")
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{index}"))


_worker = os.environ.get("PYTEST_XDIST_WORKER", "")
if _worker and os.environ.get("REDIS_URL"):
    os.environ["REDIS_URL"] = worker_redis_url(os.environ["REDIS_URL"], _worker)
