"""The gate over HTTP, against a bare authenticated insert, and proposal -> succeeded through a
real worker (PRODUCT.md section 6), in one run on one server and one database.

Needs PostgreSQL and Redis (`make bench` provides them through scripts/test-services.sh). The
benchmark migrates the database, creates its users, workflows, tools, agents, books and keys
through the services (so a fresh database works, and so does a second run on the same one),
creates the bare endpoint's table, and then:

1. serves the product with gunicorn (gthread) on a free loopback port, with the benchmark's
   settings (bench/server/settings.py: the product plus /bench/insert, DEBUG off, logging at
   WARNING), and drives it with wrk: the bare endpoint and `POST /api/v1/actions` on the allow
   path (a 30.00 EUR refund at confidence 0.9 by refund-bot, its book published), at 1 and at
   32 concurrent clients, a warm-up and then a fixed duration each;
2. runs each endpoint in-process (Django's test client), to time its SQL statements apart from
   the rest of the request;
3. starts a Celery worker on the same Redis and database and makes sequential proposals of a
   no-op tool (bench/server/noop.py, green zone, autonomous book) through the same server;
   latency is the action's `finished_at - created_at` as the database has them.

BENCH_GATE_SECONDS, BENCH_GATE_WARMUP_SECONDS, BENCH_GATE_WORKERS, BENCH_GATE_THREADS,
BENCH_EXEC_N, BENCH_EXEC_POOL and BENCH_SIDE_N change the durations, the server and the worker.

No worker runs during 1: the allowed actions wait queued (announced on a channel of the run's
own, which nobody hears) and are cancelled before 3, so that the worker started there does not
pick them up. Every process started here is stopped in a `finally`.
"""

from __future__ import annotations

import http.client
import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

from django.db import connection
from django.test import Client
from django.test.utils import override_settings

from apps.actions.models import Action, Status
from apps.registry.models import Tool, Workflow
from apps.registry.services import agent_key_create
from bench.harness import BenchFailure as BenchFailure
from bench.harness import (
    active,
    bench_user,
    celery_worker,
    check_services,
    gunicorn,
    migrate,
    percentile,
    post,
    post_on,
    published,
    purge,
    refund_world,
    server_env,
)
from bench.server.bare import TABLE_DDL
from controlplane.celery import app as celery_app
from tests.factories import make_agent

ENV = os.environ

SECONDS = float(ENV.get("BENCH_GATE_SECONDS", "10"))
WARMUP_SECONDS = float(ENV.get("BENCH_GATE_WARMUP_SECONDS", "2"))
CONCURRENCY = (1, 32)
# gunicorn on 2 cores: see docs/benchmarks.md for the configurations tried.
WORKERS = int(ENV.get("BENCH_GATE_WORKERS", "2"))
THREADS = int(ENV.get("BENCH_GATE_THREADS", "2"))
EXEC_N = int(ENV.get("BENCH_EXEC_N", "300"))
EXEC_WARMUP = max(EXEC_N // 10, 10)
EXEC_POOL = ENV.get("BENCH_EXEC_POOL", "threads")
SIDE_N = int(ENV.get("BENCH_SIDE_N", "300"))
# How often the benchmark looks for the no-op action's end. The latency is read from the
# database's timestamps, so this only sets how long the run takes (every 2, 10 or 30 ms gave
# the same figures).
POLL_SECONDS = float(ENV.get("BENCH_EXEC_POLL_SECONDS", "0.01"))

TARGET_P50_US = 5_000.0
TARGET_P99_US = 20_000.0
TARGET_RATE = 400.0
TARGET_RATIO = 1.5
TARGET_EXEC_P50_US = 10_000.0

REFUND = {
    "workflow": "refunds",
    "tool": "issue_refund",
    "params": {"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "damaged"},
    "subject": "order:1042",
    "confidence": "0.9",
}
NOOP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0}},
    "required": ["n"],
    "additionalProperties": False,
}
NOOP_CONTROLS: dict[str, Any] = {
    "objective": "Benchmark: a tool that does nothing, allowed on its own.",
    "tools": [{"tool": "bench_noop", "risk_zone": "green"}],
    "confidence_threshold": Decimal("0.8"),
    "autonomy_mode": "autonomous",
    "currency": "EUR",
}


# --- Setup ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fixture:
    refund_key: str
    noop_key: str


# The review queue and ledger benchmarks set up through these names.
_user = bench_user
_server_env = server_env


def _check_services() -> None:
    check_services("gate benchmark")


def _migrate(env: dict[str, str]) -> None:
    migrate(env)
    with connection.cursor() as cursor:
        cursor.execute(TABLE_DDL)


def _fixture() -> Fixture:
    """The registry and books the benchmark acts on; found again when they exist already."""
    refunds = refund_world()
    admin = refunds.admin

    noop_flow = Workflow.objects.get_or_create(
        slug="bench-noop", defaults={"name": "Benchmark no-op"}
    )[0]
    noop_tool = Tool.objects.get_or_create(
        slug="bench_noop",
        defaults={
            "name": "benchmark no-op",
            "input_schema": NOOP_SCHEMA,
            "connector": Tool.Connector.CALLABLE,
            "callable_path": "bench.server.noop.noop",
            "risk_zone": "green",
            "reversible": False,
        },
    )[0]
    noop_bot = make_agent("noop-bot", owner=admin, workflows=[noop_flow], tools=[noop_tool])
    published(noop_flow, refunds.risk, NOOP_CONTROLS)
    active(noop_bot)
    return Fixture(
        refund_key=agent_key_create(agent=refunds.agent, actor=admin, label="benchmark").key,
        noop_key=agent_key_create(agent=noop_bot, actor=admin, label="benchmark").key,
    )


# --- Processes -----------------------------------------------------------------------------


@contextmanager
def _gunicorn(env: dict[str, str], logs: Path, key: str) -> Iterator[int]:
    def ready(port: int) -> bool:
        return post(port, "/bench/insert", key, REFUND)[0] == 201

    with gunicorn(
        env, logs / "gunicorn.log", workers=WORKERS, threads=THREADS, ready=ready
    ) as served:
        yield served.port


@contextmanager
def _worker(env: dict[str, str], logs: Path, queue: str) -> Iterator[None]:
    with celery_worker(env, logs / "worker.log", queue, name=queue, pool=EXEC_POOL, concurrency=2):
        yield


def _wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    # As scripts/test-services.sh does for chromium: Debian's package, when running as root.
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise BenchFailure("wrk is missing: install Debian's wrk package (apt-get install wrk)")
    env = {**ENV, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", "wrk"]
    first = subprocess.run(install, env=env, capture_output=True, check=False, timeout=600)  # noqa: S603
    if first.returncode != 0:
        subprocess.run(
            ["apt-get", "update", "-qq"],  # noqa: S607
            env=env,
            capture_output=True,
            check=False,
            timeout=600,
        )
        subprocess.run(install, env=env, capture_output=True, check=True, timeout=600)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        raise BenchFailure("wrk could not be installed")
    return found


# --- Load ----------------------------------------------------------------------------------


# wrk's summary as one JSON line (latencies in microseconds, from wrk's own histogram).
WRK_SCRIPT = """
wrk.method = "POST"
wrk.body = %(body)s
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = %(authorization)s

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK-SUMMARY {"requests": %%d, "duration_us": %%d, "status": %%d, "connect": %%d, '
    .. '"read": %%d, "write": %%d, "timeout": %%d, "p50": %%d, "p90": %%d, "p99": %%d, '
    .. '"max": %%d}\\n',
    summary.requests, summary.duration, e.status, e.connect, e.read, e.write, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.max))
end
"""


def _lua_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Load:
    requests: int
    seconds: float
    p50_us: float
    p90_us: float
    p99_us: float

    @property
    def per_second(self) -> float:
        return self.requests / self.seconds


def _wrk_run(
    wrk: str,
    port: int,
    path: str,
    key: str,
    clients: int,
    seconds: float,
    scripts: Path,
    *,
    warmup: bool = False,
) -> Load:
    script = scripts / f"post-{uuid.uuid4().hex[:8]}.lua"
    script.write_text(
        WRK_SCRIPT
        % {"body": _lua_string(json.dumps(REFUND)), "authorization": _lua_string(f"Bearer {key}")}
    )
    command = [
        wrk, "--threads", str(min(clients, 2)), "--connections", str(clients),
        "--duration", f"{seconds:g}s", "--timeout", "10s", "--latency",
        "--script", str(script), f"http://127.0.0.1:{port}{path}",
    ]  # fmt: skip
    done = subprocess.run(  # noqa: S603
        command, capture_output=True, text=True, timeout=seconds + 60, check=False
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("WRK-SUMMARY ")]
    if done.returncode != 0 or not lines:
        raise BenchFailure(f"wrk failed ({done.returncode}):\n{done.stdout}{done.stderr}")
    summary = json.loads(lines[-1].removeprefix("WRK-SUMMARY "))
    errors = {k: summary[k] for k in ("status", "connect", "read", "write", "timeout")}
    # (A warm-up may end before its first answer: each process compiles the book on first use.)
    if any(errors.values()) or (summary["requests"] == 0 and not warmup):
        raise BenchFailure(f"wrk on {path} with {clients} client(s) saw errors: {errors}")
    if warmup:
        return Load(0, seconds, 0.0, 0.0, 0.0)
    return Load(
        requests=summary["requests"],
        seconds=summary["duration_us"] / 1e6,
        p50_us=float(summary["p50"]),
        p90_us=float(summary["p90"]),
        p99_us=float(summary["p99"]),
    )


# --- In-process side measurement -----------------------------------------------------------


@dataclass(frozen=True)
class Side:
    statements: int
    sql_us: list[float]
    total_us: list[float]


def _side(path: str, key: str, n: int) -> Side:
    """Each endpoint in-process through Django's test client: its SQL statements (counted and
    timed around the driver's execute, so round trips included) against the whole request."""
    client = Client(SERVER_NAME="127.0.0.1")
    sql_ns = 0
    statements = 0

    def timed(execute: Callable[..., Any], sql: str, params: Any, many: bool, context: Any) -> Any:
        nonlocal sql_ns, statements
        start = time.perf_counter_ns()
        try:
            return execute(sql, params, many, context)
        finally:
            sql_ns += time.perf_counter_ns() - start
            statements += 1

    sql_us: list[float] = []
    total_us: list[float] = []
    counts: set[int] = set()
    # The request log line at INFO would be measured too; the server logs at WARNING.
    logging.disable(logging.INFO)
    try:
        with override_settings(ROOT_URLCONF="bench.server.urls"), connection.execute_wrapper(timed):
            for i in range(n + n // 10):
                sql_ns = statements = 0
                start = time.perf_counter_ns()
                response = client.post(
                    path,
                    REFUND,
                    content_type="application/json",
                    HTTP_AUTHORIZATION=f"Bearer {key}",
                )
                elapsed = time.perf_counter_ns() - start
                if response.status_code != 201:
                    raise BenchFailure(
                        f"{path} answered {response.status_code}: {response.content!r}"
                    )
                if i >= n // 10:  # after a warm-up
                    sql_us.append(sql_ns / 1000)
                    total_us.append(elapsed / 1000)
                    counts.add(statements)
    finally:
        logging.disable(logging.NOTSET)
    # The key's "last used" is written at most once a minute: the usual count is the smallest.
    return Side(min(counts), sql_us, total_us)


# --- Proposal -> succeeded -----------------------------------------------------------------


@dataclass(frozen=True)
class Stages:
    """Per action, in us, from the database's timestamps: the whole (finished_at - created_at)
    and its three legs. created_at is set when the gate inserts the action; queued_at, started_at
    and finished_at are taken just before the writes that move it to queued, running and
    succeeded, so each leg ends where that write begins."""

    whole: list[float]
    to_queued: list[float]
    to_started: list[float]
    to_finished: list[float]


def _proposal_to_done(port: int, key: str, n: int) -> Stages:
    """n sequential no-op proposals, each waited for until it has succeeded."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    ids = []
    try:
        for i in range(n):
            status, body = post_on(
                conn,
                "/api/v1/actions",
                key,
                {
                    "workflow": "bench-noop",
                    "tool": "bench_noop",
                    "params": {"n": i},
                    "confidence": "0.9",
                },
            )
            if status != 201 or body.get("status") != Status.QUEUED:
                raise BenchFailure(f"a no-op proposal answered {status}: {body}")
            ids.append(body["id"])
            deadline = time.monotonic() + 10
            while True:
                current = Action.objects.filter(pk=body["id"]).values_list("status", flat=True)[0]
                if current == Status.SUCCEEDED:
                    break
                if current not in (Status.QUEUED, Status.RUNNING) or time.monotonic() > deadline:
                    raise BenchFailure(f"no-op action {body['id']} is {current}")
                time.sleep(POLL_SECONDS)
    finally:
        conn.close()
    stages = Stages([], [], [], [])
    for created, queued, started, finished in Action.objects.filter(pk__in=ids).values_list(
        "created_at", "queued_at", "started_at", "finished_at"
    ):
        if queued is None or started is None or finished is None:
            raise BenchFailure("a succeeded action lacks one of its timestamps")
        stages.whole.append((finished - created).total_seconds() * 1e6)
        stages.to_queued.append((queued - created).total_seconds() * 1e6)
        stages.to_started.append((started - queued).total_seconds() * 1e6)
        stages.to_finished.append((finished - started).total_seconds() * 1e6)
    return stages


# --- Rows ----------------------------------------------------------------------------------


def _load_row(case: str, load: Load, **extra: Any) -> dict[str, Any]:
    return {
        "bench": "gate",
        "case": case,
        "n": load.requests,
        "p50_us": load.p50_us,
        "p90_us": load.p90_us,
        "p99_us": load.p99_us,
        "per_second": load.per_second,
        **extra,
    }


def _sample_row(case: str, samples_us: list[float], **extra: Any) -> dict[str, Any]:
    ordered = sorted(samples_us)
    return {
        "bench": "gate",
        "case": case,
        "n": len(ordered),
        "p50_us": percentile(ordered, 0.50),
        "p90_us": percentile(ordered, 0.90),
        "p99_us": percentile(ordered, 0.99),
        **extra,
    }


def _set_aside_queued() -> None:
    """The load's allowed actions, still queued (no worker ran during it), cancelled: a worker
    that starts listening picks up what is queued, and these would only delay the latency
    measured after it."""
    Action.objects.filter(status=Status.QUEUED).update(status=Status.CANCELLED)


def _ratio(bare: Load, gate: Load) -> float:
    # Closed loop with a fixed number of clients: the ratio of rates is also that of mean latency.
    return bare.per_second / gate.per_second


def main() -> list[dict[str, Any]]:
    _check_services()
    wrk = _wrk()
    run_id = uuid.uuid4().hex[:8]
    queue = f"bench-{run_id}"
    env = server_env(queue)
    _migrate(env)
    fixture = _fixture()

    # The side measurement below proposes in this process: its tasks go to the run's queue too.
    default_queue = celery_app.conf.task_default_queue
    celery_app.conf.task_default_queue = queue
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-gate-") as folder:
        logs = Path(folder)
        try:
            with _gunicorn(env, logs, fixture.refund_key) as port:
                # wrk counts any 2xx as success: make sure this is the allow path, once.
                status, body = post(port, "/api/v1/actions", fixture.refund_key, REFUND)
                if (status, body.get("decision"), body.get("status")) != (201, "allow", "queued"):
                    raise BenchFailure(f"the refund is not on the allow path: {status} {body}")
                loads: dict[tuple[str, int], Load] = {}
                for clients in CONCURRENCY:
                    for path in ("/bench/insert", "/api/v1/actions"):
                        args = (wrk, port, path, fixture.refund_key, clients)
                        _wrk_run(*args, WARMUP_SECONDS, logs, warmup=True)
                        loads[path, clients] = _wrk_run(*args, SECONDS, logs)
                for clients in CONCURRENCY:
                    bare, gate = loads["/bench/insert", clients], loads["/api/v1/actions", clients]
                    who = f"{clients} client" + ("s" if clients > 1 else "")
                    ratio = _ratio(bare, gate)
                    rows.append(_load_row(f"bare insert (key + 1 INSERT), {who}", bare))
                    if clients == 1:
                        targets = [
                            (f"p50 < {TARGET_P50_US / 1000:.0f} ms", gate.p50_us < TARGET_P50_US),
                            (f"p99 < {TARGET_P99_US / 1000:.0f} ms", gate.p99_us < TARGET_P99_US),
                        ]
                    else:
                        targets = [(f">= {TARGET_RATE:.0f}/s", gate.per_second >= TARGET_RATE)]
                    targets.append((f"<= {TARGET_RATIO}x bare", ratio <= TARGET_RATIO))
                    rows.append(
                        _load_row(
                            f"POST /api/v1/actions, allow, {who}",
                            gate,
                            ratio=f"{ratio:.2f}x",
                            target="; ".join(name for name, _ in targets),
                            met=tuple(met for _, met in targets),
                        )
                    )

                # Where a request's time goes: its statements, in-process.
                for path, name in (("/bench/insert", "bare insert"), ("/api/v1/actions", "gate")):
                    side = _side(path, fixture.refund_key, SIDE_N)
                    rows.append(
                        _sample_row(
                            f"in-process {name}: whole request (test client, 1 client)",
                            side.total_us,
                        )
                    )
                    rows.append(
                        _sample_row(
                            f"in-process {name}: its {side.statements} SQL statements",
                            side.sql_us,
                        )
                    )

                purge(queue)
                _set_aside_queued()
                with _worker(env, logs, queue):
                    _proposal_to_done(port, fixture.noop_key, EXEC_WARMUP)
                    stages = _proposal_to_done(port, fixture.noop_key, EXEC_N)
                rows.append(
                    _sample_row(
                        f"proposal -> succeeded, no-op tool, Redis, {EXEC_POOL} worker",
                        stages.whole,
                        target=f"p50 < {TARGET_EXEC_P50_US / 1000:.0f} ms",
                        met=percentile(sorted(stages.whole), 0.5) < TARGET_EXEC_P50_US,
                    )
                )
                # An allowed action is written once, proposed and queued at the same instant, so
                # the first leg runs from the proposal to a worker starting it.
                for case, leg in (
                    ("proposed -> started: the gate's commit, broker, worker", stages.to_started),
                    ("started -> finished: claim, breaker, the no-op call", stages.to_finished),
                ):
                    rows.append(_sample_row(f"  of which {case}", leg))
        finally:
            purge(queue)
            celery_app.conf.task_default_queue = default_queue
    return rows
