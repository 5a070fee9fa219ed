"""The demo's tests run in the demo world the runtime's tests use too (its agents, tools and
sandbox on a live server) and on a Celery queue of their own."""

from __future__ import annotations

from tests.runtime.conftest import demo_world, own_queue

__all__ = ["demo_world", "own_queue"]
