"""The review queue page with 100,000 open items: server time per request (target p95 < 100 ms).

Run with `make bench` (PostgreSQL from scripts/test-services.sh), or
`.venv/bin/python bench/run.py reviews` with DATABASE_URL set. The items are written once,
straight into the tables (the gate would take minutes to hold 100,000 actions), and found again
on the next run. The page is requested in-process through Django's test client, signed in as a
supervisor: what is timed is the whole request (middleware, queries, template), not the network.
"""

from __future__ import annotations

import sys
import time
import uuid
from datetime import timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import Action, Decision, Status
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool, Workflow
from apps.reviews.items import queue_tally_rebuild
from apps.reviews.models import Kind, ReviewItem, State
from bench.bench_gate import BenchFailure, _check_services, _fixture, _migrate, _server_env, _user

ITEMS = 100_000
REQUESTS = 200
TARGET_P95_MS = 100.0
HELD = [
    {
        "policy": "issue_refund-review-above-5000",
        "message": "issue_refund above 50.00 EUR needs a person",
    }
]


def _fill(count: int) -> None:
    """Top the open items up to `count`: held refunds of refund-bot, deadlines spread over
    the past and the next two days (about a quarter overdue)."""
    missing = count - ReviewItem.objects.filter(state=State.OPEN).count()
    if missing <= 0:
        return
    agent = Agent.objects.get(slug="refund-bot")
    tool = Tool.objects.get(slug="issue_refund")
    workflow = Workflow.objects.get(slug="refunds")
    version = BookVersion.objects.get(workflow=workflow, status=BookVersion.Status.PUBLISHED)
    now = timezone.now()
    batch = 5_000
    for start in range(0, missing, batch):
        size = min(batch, missing - start)
        actions = []
        items = []
        for offset in range(size):
            index = start + offset
            created = now - timedelta(minutes=index % 720)
            action = Action(
                id=uuid.uuid4(),
                agent=agent,
                workflow=workflow,
                tool=tool,
                book_version=version,
                status=Status.PENDING_REVIEW,
                decision=Decision.HOLD,
                reasons=HELD,
                params={
                    "order_id": str(1001 + index % 20),
                    "amount_cents": 5_001 + index % 40_000,
                    "currency": "EUR",
                    "reason": "damaged",
                },
                subject=f"order:{1001 + index % 20}",
                created_at=created,
            )
            actions.append(action)
            deadline = created + timedelta(minutes=60 * (index % 48) - 600)
            items.append(
                ReviewItem(
                    action=action,
                    workflow=workflow,
                    kind=Kind.HOLD,
                    zone="yellow",
                    created_at=created,
                    deadline=deadline,
                    expires_at=deadline + timedelta(days=30),
                )
            )
        with transaction.atomic():
            Action.objects.bulk_create(actions)
            ReviewItem.objects.bulk_create(items)
    queue_tally_rebuild()
    with connection.cursor() as cursor:
        # As autovacuum leaves a table in service: statistics and the visibility map current.
        cursor.execute("VACUUM ANALYZE reviews_reviewitem")
        cursor.execute("VACUUM ANALYZE actions_action")
        # And the bulk load written out, so that its checkpoint does not land in the timings
        # (CHECKPOINT needs a superuser or pg_checkpoint; without it, the timings say so).
        try:
            cursor.execute("CHECKPOINT")
        except DatabaseError:
            sys.stderr.write("bench reviews: no CHECKPOINT permission; timings may include one\n")


def _timed(client: Client, path: str, headers: dict[str, str]) -> list[float]:
    for _ in range(10):
        client.get(path, headers=headers)
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(path, headers=headers)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise BenchFailure(f"GET {path} answered {response.status_code}")
    return sorted(samples)


def _row(case: str, samples_ms: list[float]) -> dict[str, Any]:
    def at(fraction: float) -> float:
        return samples_ms[max(0, round(fraction * len(samples_ms)) - 1)]

    p95 = at(0.95)
    return {
        "bench": "reviews",
        "case": case,
        "n": len(samples_ms),
        "p50_us": at(0.50) * 1000,
        "p90_us": at(0.90) * 1000,
        "p99_us": at(0.99) * 1000,
        "per_second": len(samples_ms) / (sum(samples_ms) / 1000),
        "target": f"p95 < {TARGET_P95_MS:.0f} ms (p95 {p95:.1f} ms)",
        "met": p95 < TARGET_P95_MS,
    }


def main() -> list[dict[str, Any]]:
    _check_services()
    _migrate(_server_env("bench-reviews"))
    _fixture()
    _fill(ITEMS)
    supervisor: User = _user("bench-supervisor", Role.SUPERVISOR)
    client = Client(SERVER_NAME="localhost")
    client.force_login(supervisor)
    htmx = {"HX-Request": "true"}
    open_count = ReviewItem.objects.filter(state=State.OPEN).count()
    cases = [
        ("queue page, whole, first page", "/reviews/", {}),
        ("queue refresh (htmx fragment)", "/reviews/", htmx),
        ("filtered: workflow + zone", "/reviews/?workflow=refunds&zone=yellow", htmx),
        ("filtered: overdue only", "/reviews/?overdue=on", htmx),
        ("filtered: older than 4 hours", "/reviews/?age=4h", htmx),
        ("page 100 (items 4,951-5,000)", "/reviews/?page=100", htmx),
    ]
    return [
        _row(f"{case}, {open_count:,} open items", _timed(client, path, headers))
        for case, path, headers in cases
    ]
