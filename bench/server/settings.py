"""Settings of the server that bench/bench_gate.py measures: the product's own, plus the URLconf
with the bare endpoint (bench/server/urls.py), which must never be reachable in the product."""

from __future__ import annotations

from controlplane.settings import *  # noqa: F403

ROOT_URLCONF = "bench.server.urls"
# Measured as served in production: never with DEBUG (which also keeps every query in memory).
DEBUG = False
