"""The Autonomy Balance Sheet over 1,000,000 cost events (target < 300 ms server time) and a
Decision Book backtest over 100,000 recorded actions (target < 10 s).

Run with `make bench`, or `scripts/test-services.sh .venv/bin/python bench/run.py ledger`. The
records are written once, straight into the tables (the runtime would take hours to make a
million model calls), and found again on the next run:

- cost events: refunds, bench-noop and a third workflow, spread evenly over the last 365 days
  (about 2,740 a day), six-decimal costs; then the daily rollup runs once (timed, as the beat
  task would) and the page is requested in-process through Django's test client, signed in as
  finance: the whole request (middleware, queries, plotly figures, template) is timed;
- actions: 100,000 refunds of refund-bot, amounts from 1.00 to 600.00 EUR and confidences from
  0.50 to 0.99, counted by the action tally (compacted once, timed, as the scheduler would); a
  draft that lowers the review-free limit to 20.00 EUR and the confidence threshold to 0.6 is
  backtested against all of them as risk runs it: requested, then decided in parts by a Celery
  worker with two processes (the shape of the Procfile's worker), timed from the request to
  the merged result; and once in this process alone, part after part, for comparison.
"""

from __future__ import annotations

import tempfile
import time
import uuid
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import connection, transaction
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import Action, Decision, Status
from apps.books.models import BookVersion
from apps.books.services import draft_create, draft_update
from apps.ledger.backtest import backtest_perform, backtest_request
from apps.ledger.models import Backtest
from apps.ledger.rollups import cost_rollup
from apps.ledger.tallies import tally_compact
from apps.registry.models import Agent, Tool, Workflow
from apps.runtime.models import ModelCall
from bench.bench_gate import BenchFailure, _check_services, _fixture, _migrate, _server_env, _user
from bench.harness import celery_worker, purge, server_env
from controlplane.celery import app as celery_app
from tests.factories import REFUND_CONTROLS

EVENTS = 1_000_000
ACTIONS = 100_000
REQUESTS = 30
PAGE_TARGET_MS = 300.0
BACKTEST_TARGET_S = 10.0


def _fill_events(count: int) -> None:
    missing = count - ModelCall.objects.count()
    if missing <= 0:
        return
    agent = Agent.objects.get(slug="refund-bot")
    flows = [Workflow.objects.get(slug="refunds"), Workflow.objects.get(slug="bench-noop")]
    flows.append(
        Workflow.objects.get_or_create(slug="bench-invoices", defaults={"name": "Invoices"})[0]
    )
    with transaction.atomic(), connection.cursor() as cursor:
        cursor.execute(
            """
            INSERT INTO runtime_modelcall (
                created_at, source, workflow_id, agent_id, task, tier, provider, model,
                input_tokens, output_tokens, cost_cents, currency, priced, latency_ms,
                pii_counts, pii_masked, outcome, error, escalation)
            SELECT now() - (n * interval '365 days' / %(count)s), 'hosted',
                   (%(flows)s::bigint[])[1 + n %% 3], %(agent)s, 'decide', 'small', 'bench',
                   'bench-small', 400, 80, (n %% 9973) / 1000000.0 + (n %% 7), 'EUR', true,
                   120, '{}'::jsonb, 0, 'ok', '', ''
              FROM generate_series(1, %(count)s) AS n
            """,
            {"count": missing, "flows": [flow.pk for flow in flows], "agent": agent.pk},
        )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE runtime_modelcall")


def _fill_actions(count: int) -> None:
    workflow = Workflow.objects.get(slug="refunds")
    missing = count - Action.objects.filter(workflow=workflow).count()
    if missing <= 0:
        return
    agent = Agent.objects.get(slug="refund-bot")
    tool = Tool.objects.get(slug="issue_refund")
    version = BookVersion.objects.get(workflow=workflow, status=BookVersion.Status.PUBLISHED)
    now = timezone.now()
    for start in range(0, missing, 5_000):
        batch = []
        for index in range(start, min(missing, start + 5_000)):
            amount = 100 + (index * 7919) % 59_900
            batch.append(
                Action(
                    id=uuid.uuid4(),
                    agent=agent,
                    workflow=workflow,
                    tool=tool,
                    book_version=version,
                    status=Status.SUCCEEDED,
                    decision=Decision.ALLOW if amount <= 5000 else Decision.HOLD,
                    params={
                        "order_id": str(index),
                        "amount_cents": amount,
                        "currency": "EUR",
                        "reason": "damaged",
                    },
                    subject=f"order:{index}",
                    confidence=Decimal(50 + index % 50) / 100,
                    created_at=now - timedelta(minutes=index),
                )
            )
        Action.objects.bulk_create(batch)
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE actions_action")


def _row(case: str, samples_ms: list[float], target: str, met: bool) -> dict[str, Any]:
    ordered = sorted(samples_ms)

    def at(fraction: float) -> float:
        return ordered[max(0, round(fraction * len(ordered)) - 1)]

    return {
        "bench": "ledger",
        "case": case,
        "n": len(ordered),
        "p50_us": at(0.50) * 1000,
        "p90_us": at(0.90) * 1000,
        "p99_us": at(0.99) * 1000,
        "per_second": len(ordered) / (sum(ordered) / 1000),
        "target": target,
        "met": met,
    }


def _page(client: Client, path: str) -> list[float]:
    for _ in range(3):
        client.get(path)
    samples = []
    for _ in range(REQUESTS):
        start = time.perf_counter()
        response = client.get(path)
        samples.append((time.perf_counter() - start) * 1000)
        if response.status_code != 200:
            raise BenchFailure(f"GET {path} answered {response.status_code}")
    return samples


def main() -> list[dict[str, Any]]:
    _check_services()
    _migrate(_server_env("bench-ledger"))
    fixture = _fixture()
    del fixture
    _fill_events(EVENTS)
    _fill_actions(ACTIONS)
    rows = []

    start = time.perf_counter()
    tally_compact()
    rows.append(
        _row(
            "action tally compacted after the 100,000 actions were written",
            [(time.perf_counter() - start) * 1000],
            "",
            True,
        )
    )

    start = time.perf_counter()
    cost_rollup(rebuild=True)
    rows.append(
        _row(
            "daily rollup, rebuilt from 1M cost events",
            [(time.perf_counter() - start) * 1000],
            "",
            True,
        )
    )

    client = Client(SERVER_NAME="localhost")
    client.force_login(_user("bench-finance", Role.FINANCE))
    this_month = timezone.localdate().replace(day=1)
    last_month = (this_month - timedelta(days=1)).replace(day=1)
    cases = [
        ("balance sheet page, this month (rollup + live tail)", "/ledger/"),
        ("balance sheet page, last month (rollup)", f"/ledger/?month={last_month:%Y-%m}"),
        ("balance sheet CSV, this month", "/ledger/balance-sheet.csv"),
    ]
    for case, path in cases:
        samples = _page(client, path)
        p95 = sorted(samples)[max(0, round(0.95 * len(samples)) - 1)]
        rows.append(
            _row(
                f"{case}, {EVENTS:,} events",
                samples,
                f"p95 < {PAGE_TARGET_MS:.0f} ms (p95 {p95:.1f} ms)",
                p95 < PAGE_TARGET_MS,
            )
        )

    workflow = Workflow.objects.get(slug="refunds")
    risk = _user("bench-risk", Role.RISK)
    draft = BookVersion.objects.filter(workflow=workflow, status=BookVersion.Status.DRAFT).first()
    if draft is None:
        draft = draft_create(workflow=workflow, user=risk)
    tools = [{"tool": "issue_refund", "risk_zone": "yellow", "auto_cap": 2000, "hard_cap": 50000}]
    values = {
        **REFUND_CONTROLS,
        "tools": tools,
        "confidence_threshold": Decimal("0.6"),
        "escalation_owner_id": risk.pk,
    }
    draft = draft_update(version_id=draft.pk, user=risk, values=values)
    active = BookVersion.objects.get(workflow=workflow, status=BookVersion.Status.PUBLISHED)
    samples = []
    queue = f"bench-ledger-{uuid.uuid4().hex[:8]}"
    default_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    try:
        with tempfile.TemporaryDirectory(prefix="bench-ledger-") as folder, celery_worker(
            server_env(queue), Path(folder) / "worker.log", queue,
            name="backtest", pool="prefork", concurrency=2,
        ):  # fmt: skip
            for _ in range(3):
                start = time.perf_counter()
                with transaction.atomic():  # the task is sent when the request commits
                    backtest = backtest_request(
                        workflow=workflow, draft=draft, user=risk, limit=ACTIONS
                    )
                done = _finished(backtest.pk)
                samples.append((time.perf_counter() - start) * 1000)
                _check(done)
    finally:
        purge(queue)
        celery_app.conf.task_default_queue = default_queue
    slowest = max(samples) / 1000
    flips = done.result["flip_total"] if done.result else 0
    rows.append(
        _row(
            f"backtest, draft vs active, {ACTIONS:,} actions ({flips:,} flips), "
            "requested -> result, one worker of 2 processes",
            samples,
            f"< {BACKTEST_TARGET_S:.0f} s (slowest {slowest:.1f} s)",
            slowest < BACKTEST_TARGET_S,
        )
    )

    backtest = Backtest.objects.create(
        workflow=workflow, draft=draft, active=active, requested_by=risk, limit=ACTIONS
    )
    start = time.perf_counter()
    done = backtest_perform(backtest_id=backtest.pk)
    alone = (time.perf_counter() - start) * 1000
    _check(done)
    rows.append(
        _row(
            f"backtest, the same, decided in this process alone (for comparison; {len(samples)} "
            "requests above)",
            [alone],
            "",
            True,
        )
    )
    return rows


def _finished(backtest_id: uuid.UUID) -> Backtest:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        backtest = Backtest.objects.get(pk=backtest_id)
        if backtest.finished:
            return backtest
        time.sleep(0.05)
    raise BenchFailure(f"backtest {backtest_id} did not finish within 120 s")


def _check(done: Backtest) -> None:
    if done.state != Backtest.State.DONE or done.result is None:
        raise BenchFailure(f"backtest failed: {done.error}")
    if done.result["total"] != ACTIONS:
        raise BenchFailure(f"backtest decided {done.result['total']} actions, not {ACTIONS}")
