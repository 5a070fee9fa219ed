"""Load: proposals at a fixed rate for a fixed time against the product as deployed (gunicorn,
Celery workers, PostgreSQL, Redis, the sandbox over HTTP), then every allowed action checked
against the database: executed exactly once.

Needs PostgreSQL and Redis (`make bench` provides them). The benchmark migrates the database,
uses the gate benchmark's refund world (refund-bot, `issue_refund`, the refund book: auto cap
50.00 EUR, so a smaller refund is allowed and queued, a larger one held for a person), makes one
sandbox order per proposal (so no two refunds meet on an order's refundable balance), and starts:

- the sandbox, served on its own (gunicorn gthread, 1 worker, LOAD_SANDBOX_THREADS threads), as
  a system of record would be; `issue_refund` is pointed at it for the run;
- LOAD_CELERY_WORKERS `celery worker` processes (threads pool, LOAD_CELERY_THREADS each) on a
  queue of the run's own, and `celery beat`, whose requeue sweep sends actions left behind
  (queued, or running with their lease over) to them again;
- the product: gunicorn with 2 workers (gthread, LOAD_WEB_THREADS threads each).

Then an open-loop client (bench/openloop.py) proposes at LOAD_RATE a second for LOAD_SECONDS,
over at most LOAD_CONNECTIONS keep-alive connections, after a short warm-up. Nine proposals in
ten are refunds of 1.00 to 49.99 EUR (allowed), one in ten of 60.00 to 89.99 EUR (held); each
its own order and idempotency key. Latency runs from when a proposal was due; any answer but
the expected 201, a broken connection, or no answer within LOAD_TIMEOUT_SECONDS of its due time
is an error. Meanwhile the CPU of each process group is read from /proc and PostgreSQL's
backends are sampled (bench/sampling.py).

Afterwards the benchmark waits until none of the run's actions is queued or running (at most
LOAD_DRAIN_SECONDS, and not past the time the sweep needs to send a stalled action again), and
checks in the database that every allowed action succeeded with exactly one refund in the
sandbox under its idempotency key, on its order, of its amount, and that no held action had any
effect. Every process started here is stopped when the run ends, however it ends.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
import uuid
from collections import Counter
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db.models import Count, Max, QuerySet
from django.utils import timezone

from apps.actions.models import Action, Status
from apps.registry.models import Tool
from apps.registry.services import agent_key_create
from apps.sandbox.models import FaultMode, Order
from apps.sandbox.selectors import faults_current
from apps.sandbox.services import faults_set
from bench import exactly_once, load_deploy, openloop, sampling
from bench.exactly_once import Check
from bench.harness import (
    BenchFailure,
    check_services,
    migrate,
    percentile,
    post,
    purge,
    refund_world,
    server_env,
    sigterm_unwinds,
)

ENV = os.environ

RATE = float(ENV.get("LOAD_RATE", "300"))
SECONDS = float(ENV.get("LOAD_SECONDS", "60"))
CONNECTIONS = int(ENV.get("LOAD_CONNECTIONS", "64"))
TIMEOUT_SECONDS = float(ENV.get("LOAD_TIMEOUT_SECONDS", "10"))
DRAIN_SECONDS = float(ENV.get("LOAD_DRAIN_SECONDS", "600"))
SHAPE = load_deploy.Shape(
    web_workers=2,
    web_threads=int(ENV.get("LOAD_WEB_THREADS", "2")),
    web_class=ENV.get("LOAD_WEB_CLASS", "gthread"),
    celery_workers=int(ENV.get("LOAD_CELERY_WORKERS", "2")),
    celery_threads=int(ENV.get("LOAD_CELERY_THREADS", "2")),
    sandbox_threads=int(ENV.get("LOAD_SANDBOX_THREADS", "4")),
)
# The warm-up: each web process reads the registry and compiles the book on first use; never
# harder than the load itself.
WARMUP_RATE = min(RATE, 10.0)
WARMUP_SECONDS = 2.0
HELD_EVERY = int(ENV.get("LOAD_HELD_EVERY", "10"))  # one proposal in ten is held (0: none)
ORDER_CENTS = 10_000

AUDIT_HEAD = "%audit_chainhead%"  # the statements that lock the audit chain's head


# --- What is proposed ----------------------------------------------------------------------


@dataclass(frozen=True)
class Plan:
    """Proposal i of run `run_id`: its order, amount, idempotency key and expected answer."""

    run_id: str

    @property
    def order_prefix(self) -> str:
        return f"L{self.run_id}-"

    @property
    def key_prefix(self) -> str:
        return f"load-{self.run_id}-"

    @staticmethod
    def held(i: int) -> bool:
        return HELD_EVERY > 0 and i % HELD_EVERY == HELD_EVERY - 1

    def proposal(self, i: int) -> dict[str, Any]:
        order = f"{self.order_prefix}{i:06d}"
        amount = 6_000 + (i * 131) % 3_000 if self.held(i) else 100 + (i * 37) % 4_900
        return {
            "workflow": "refunds",
            "tool": "issue_refund",
            "params": {
                "order_id": order,
                "amount_cents": amount,
                "currency": "EUR",
                "reason": "parcel arrived damaged",
            },
            "subject": f"order:{order}",
            "confidence": "0.9",
            "idempotency_key": f"{self.key_prefix}{i}",
        }

    def expected(self, i: int) -> tuple[str, str]:
        """(decision, status) of the answer to proposal i."""
        return ("hold", Status.PENDING_REVIEW) if self.held(i) else ("allow", Status.QUEUED)


def _orders_create(plan: Plan, count: int) -> None:
    Order.objects.bulk_create(
        [
            Order(
                pk=f"{plan.order_prefix}{i:06d}",
                customer=f"load customer {i}",
                currency="EUR",
                total_cents=ORDER_CENTS,
            )
            for i in range(count)
        ],
        batch_size=2_000,
    )


def _encoded(plan: Plan, key: str, port: int, numbers: range) -> list[bytes]:
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    host = f"127.0.0.1:{port}"
    return [
        openloop.encode("/api/v1/actions", json.dumps(plan.proposal(i)).encode(), headers, host)
        for i in numbers
    ]


# --- The load ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Tally:
    scheduled: int
    ok: int
    errors: Counter[str]
    latencies: list[float]  # seconds, sorted; an error counts as never answered (inf)
    answered: list[float]  # seconds, sorted: the proposals answered as expected
    per_second: float
    max_lag: float


def _tally(plan: Plan, first: int, report: openloop.Report) -> Tally:
    errors: Counter[str] = Counter()
    latencies, answered = [], []
    for offset, outcome in enumerate(report.outcomes):
        latency = outcome.latency
        if outcome.error or latency is None:
            errors[outcome.error or "no answer"] += 1
            latencies.append(math.inf)
            continue
        if outcome.status != 201:
            errors[f"HTTP {outcome.status}"] += 1
            latencies.append(math.inf)
            continue
        try:
            body = json.loads(outcome.body)
        except ValueError:
            body = None
        if not isinstance(body, dict):
            body = {}
        if (body.get("decision"), body.get("status")) != plan.expected(first + offset):
            errors[f"answered {body.get('decision')}/{body.get('status')}"] += 1
            latencies.append(math.inf)
            continue
        latencies.append(latency)
        answered.append(latency)
    ok = len(answered)
    return Tally(
        scheduled=len(report.outcomes),
        ok=ok,
        errors=errors,
        latencies=sorted(latencies),
        answered=sorted(answered),
        per_second=ok / report.seconds if report.seconds else 0.0,
        max_lag=report.max_lag,
    )


def _open_loop(
    plan: Plan, key: str, port: int, first: int, count: int, rate: float
) -> openloop.Report:
    requests = _encoded(plan, key, port, range(first, first + count))
    return openloop.load(
        "127.0.0.1",
        port,
        requests,
        rate=rate,
        timeout=TIMEOUT_SECONDS,
        connections=CONNECTIONS,
    )


def _recorded(actions: QuerySet[Action], since: datetime) -> tuple[int, float]:
    """How many of `actions` the gate recorded from `since` on, and how many a second."""
    found = actions.filter(created_at__gte=since).aggregate(n=Count("pk"), last=Max("created_at"))
    if not found["n"]:
        return 0, 0.0
    return found["n"], found["n"] / max((found["last"] - since).total_seconds(), 1e-3)


def _patience(tool: Tool) -> float:
    """How long the drain waits without progress: long enough for the requeue sweep to send an
    action left behind again (its lease over, then ACTION_REQUEUE_AFTER_SECONDS, then the next
    sweep), plus a minute."""
    lease = tool.timeout_seconds + float(settings.ACTION_LEASE_MARGIN_SECONDS)
    sweep = float(settings.CELERY_BEAT_SCHEDULE["action-requeue"]["schedule"])  # type: ignore[arg-type]
    return lease + settings.ACTION_REQUEUE_AFTER_SECONDS + sweep + 60


def _check_paths(plan: Plan, key: str, port: int) -> int:
    """Proposals 0 and HELD_EVERY - 1, one at a time: the allow path and the hold path."""
    numbers = (0, HELD_EVERY - 1) if HELD_EVERY > 1 else (0,)
    for i in numbers:
        status, body = post(port, "/api/v1/actions", key, plan.proposal(i))
        if (status, (body.get("decision"), body.get("status"))) != (201, plan.expected(i)):
            raise BenchFailure(f"proposal {i} answered {status} {body}, not {plan.expected(i)}")
    return len(numbers)


# --- Rows ----------------------------------------------------------------------------------


def _percentiles(seconds: list[float]) -> dict[str, float | None]:
    if not seconds:
        return {"p50_us": None, "p90_us": None, "p99_us": None}
    return {f"p{p}_us": percentile(seconds, p / 100) * 1e6 for p in (50, 90, 99)}  # (inf stays inf)


@dataclass(frozen=True)
class Run:
    tally: Tally
    warm: Tally
    answered: int  # proposals answered as expected, the paths checked and the warm-up included
    recorded: tuple[int, float]  # actions the gate recorded from the load's start, and per second
    drained: tuple[float, int]  # seconds waited after the load, actions still unfinished
    failures: Counter[str]  # tasks that ended in an exception
    deadlocks: int  # detected by PostgreSQL from the warm-up to the end of the drain
    cpu: sampling.Cpu
    activity: list[sampling.Activity]


def _counts(counter: Counter[str], most: int | None = None) -> str:
    return ", ".join(f"{n:,} {kind}" for kind, n in counter.most_common(most))


def _load_row(run: Run, check: Check) -> dict[str, Any]:
    tally = run.tally
    errors = sum(tally.errors.values())
    held = 100 / HELD_EVERY if HELD_EVERY else 0
    warm = sum(run.warm.errors.values())
    return {
        "bench": "load",
        "case": (
            f"POST /api/v1/actions, open loop at {RATE:g}/s for {SECONDS:g} s ({100 - held:.0f} % "
            f"allowed, {held:.0f} % held; {SHAPE.describe()}): {errors:,} errors"
            + (f" ({_counts(tally.errors)})" if errors else "")
            + ", counted as never answered"
            + (f"; the warm-up before it: {warm:,} error(s)" if warm else "")
            + f"; the gate recorded {run.recorded[0]:,} of them, {run.recorded[1]:.1f}/s from the "
            "load's start to the last (the client's gave-ups included)"
        ),
        "n": tally.scheduled,
        **_percentiles(tally.latencies),
        "per_second": tally.per_second,
        "target": f"{RATE:g}/s for {SECONDS:g} s; 0 errors; exactly once",
        "met": (tally.per_second >= 0.99 * RATE, errors == 0, check.exactly_once),
    }


def _check_row(run: Run, check: Check) -> dict[str, Any]:
    seconds, left = run.drained
    not_done = check.one_effect - check.once
    failed = sum(run.failures.values())
    parts = [
        f"exactly once: {check.once:,} of {check.allowed:,} allowed actions succeeded with one "
        "sandbox refund under their key, on their order, of their amount",
        f"{not_done:,} more have that refund but did not succeed" if not_done else "",
        f"{check.no_effect:,} have no refund" if check.no_effect else "",
        f"{check.duplicated:,} with more than one",
        f"statuses {_counts(check.statuses)}",
        f"{check.retried:,} retried",
        f"{check.held_untouched:,} of {check.held:,} held untouched",
        f"{check.stray_effects:,} stray refunds",
        f"{check.recorded - run.answered:,} actions recorded for proposals not answered as "
        "expected",
        (
            f"waited {seconds:.0f} s after the load: {left:,} still queued or running"
            if left
            else f"the last finished {seconds:.0f} s after the load"
        ),
        f"{failed:,} tasks failed in the workers"
        + (f" ({_counts(run.failures, 3)})" if failed else ""),
        "latency: proposed -> succeeded",
    ]
    return {
        "bench": "load",
        "case": "; ".join(part for part in parts if part),
        "n": check.allowed,
        **_percentiles(check.to_succeeded),
        "target": "every allowed action succeeded, one effect each",
        "met": check.exactly_once,
    }


def _rows(run: Run, check: Check) -> list[dict[str, Any]]:
    tally = run.tally
    rows = [_load_row(run, check)]
    if tally.errors and tally.answered:
        rows.append(
            {
                "bench": "load",
                "case": "  the proposals answered as expected only",
                "n": tally.ok,
                **_percentiles(tally.answered),
            }
        )
    rows.append(_check_row(run, check))
    rows.append(
        {
            "bench": "load",
            "case": (
                f"CPU over the {run.cpu.seconds:.0f} s of load, % of one core "
                f"({os.cpu_count()} cores): {run.cpu.describe()}; "
                f"the client sent at most {tally.max_lag * 1000:.0f} ms late"
            ),
        }
    )
    if run.activity:
        rows.append(
            {
                "bench": "load",
                "case": "PostgreSQL backends during the load, on average: "
                + run.activity[0].describe("the audit chain's head")
                + f"; {run.deadlocks:,} deadlocks detected (warm-up, load and drain)",
            }
        )
    return rows


def main() -> list[dict[str, Any]]:
    with sigterm_unwinds():
        return _main()


def _main() -> list[dict[str, Any]]:
    check_services("load test")
    run_id = uuid.uuid4().hex[:8]
    queue = f"bench-load-{run_id}"
    env = server_env(queue)
    migrate(env)
    world = refund_world()
    tool = Tool.objects.get(slug="issue_refund")
    key = agent_key_create(agent=world.agent, actor=world.admin, label="load test").key
    if faults_current().mode != FaultMode.HEALTHY:
        faults_set(mode=FaultMode.HEALTHY)

    plan = Plan(run_id)
    warmup = int(WARMUP_RATE * WARMUP_SECONDS)
    first = max(HELD_EVERY, 1)  # 0 .. HELD_EVERY - 1: the paths checked one at a time
    count = int(RATE * SECONDS)
    _orders_create(plan, first + warmup + count)

    try:
        with tempfile.TemporaryDirectory(prefix="bench-load-") as folder, ExitStack() as stack:
            logs = Path(folder)
            deployed = load_deploy.deploy(
                stack, SHAPE, env=env, logs=logs, queue=queue, key=key, tool=tool
            )
            web = deployed.web
            deadlocks_before = exactly_once.deadlocks()
            checked = _check_paths(plan, key, web.port)
            warm = _tally(
                plan,
                first,
                _open_loop(plan, key, web.port, first, warmup, WARMUP_RATE),
            )
            window = sampling.CpuWindow(deployed.groups())
            load_started = timezone.now()
            with sampling.pg_activity(AUDIT_HEAD) as activity:
                window.start()
                report = _open_loop(plan, key, web.port, first + warmup, count, RATE)
                cpu = window.stop()
            tally = _tally(plan, first + warmup, report)

            mine = Action.objects.filter(
                agent=world.agent, idempotency_key__startswith=plan.key_prefix
            )
            drained = exactly_once.drain(mine, limit=DRAIN_SECONDS, patience=_patience(tool))
            run = Run(
                tally=tally,
                warm=warm,
                answered=checked + warm.ok + tally.ok,
                recorded=_recorded(mine, load_started),
                drained=drained,
                failures=exactly_once.task_failures(
                    [logs / f"worker{n}.log" for n in range(SHAPE.celery_workers)]
                ),
                deadlocks=exactly_once.deadlocks() - deadlocks_before,
                cpu=cpu,
                activity=activity,
            )
    finally:
        purge(queue)
    return _rows(
        run,
        exactly_once.check(
            agent=world.agent, key_prefix=plan.key_prefix, order_prefix=plan.order_prefix
        ),
    )
