"""The audit log: writers without a shared lock, the sequencer, and full verification
(PRODUCT.md section 6: verification > 100,000 events/s).

Needs PostgreSQL (`make bench` provides it).

1. Concurrent writers: BENCH_AUDIT_WRITERS threads (default 32), each writing a proposal's
   three events in one transaction (`audit_batch`, as the gate does) and holding the transaction
   open 5 ms more (the rest of a gate transaction), for BENCH_AUDIT_SECONDS. While they run,
   pg_stat_activity is sampled for backends waiting on a lock. With a shared head row, as the
   trail had before, the writers queue behind each other; without it none waits.
2. The log is brought to BENCH_AUDIT_EVENTS events (default 1,000,000), inserted in bulk by SQL
   with payloads like a transition's, and the sequencer takes them in (`log_integrate`, batches
   of 50,000): its rate is reported.
3. `audit_verify` (what `manage.py audit_verify` and the audit page's "Verify now" run)
   recomputes every entry from its event and holds the tree against every signed checkpoint,
   BENCH_AUDIT_RUNS times (default 2).
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from django.db import connection, connections, transaction

from apps.audit.log import log_integrate
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.audit.services import audit_batch, audit_record
from apps.registry.models import Workflow
from bench.bench_gate import BenchFailure, _check_services, _migrate, _server_env

EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "1000000"))
RUNS = int(os.environ.get("BENCH_AUDIT_RUNS", "2"))
WRITERS = int(os.environ.get("BENCH_AUDIT_WRITERS", "32"))
SECONDS = float(os.environ.get("BENCH_AUDIT_SECONDS", "8"))
TARGET_PER_SECOND = 100_000
SEQUENCER_BATCH = 50_000

# A million events like a transition's, written by PostgreSQL itself: canonical payload text,
# its digest, half of them with a trace id.
_FILL_SQL = """
INSERT INTO audit_auditevent (created_at, actor_type, actor, verb, target_type, target_id,
                              subject, trace_id, payload, payload_digest, payload_canonical)
SELECT now() - interval '5 minutes' + n * interval '100 microseconds', 'system', 'system:worker',
       'action.running', 'actions.action', md5(n::text), 'order:' || (1000 + n %% 9000),
       CASE WHEN n %% 2 = 1 THEN lpad(to_hex(n), 32, '0') ELSE '' END,
       canonical::jsonb, encode(sha256(convert_to(canonical, 'UTF8')), 'hex'), canonical
FROM (
    SELECT n, '{"from":"queued","params":{"amount_cents":' || (100 + n * 7919 %% 59900)
              || ',"currency":"EUR","order_id":"' || (1000 + n %% 9000)
              || '","reason":"damaged"},"reasons":[{"id":"refunds-under-cap","message":'
              || '"Refunds up to 50.00 EUR run on their own"}],"to":"running"}' AS canonical
    FROM generate_series(%s::bigint, %s::bigint) AS n
) rows
"""


def _writers(workflow: Workflow) -> dict[str, Any]:
    """Concurrent writers for SECONDS: proposals written per second, and lock waits seen."""
    stop = time.monotonic() + SECONDS
    written = [0] * WRITERS
    failures: list[BaseException] = []

    def write(slot: int) -> None:
        try:
            while time.monotonic() < stop:
                with transaction.atomic(), audit_batch():
                    for verb in ("action.proposed", "action.approved", "action.queued"):
                        audit_record(actor="agent:bench", verb=verb, target=workflow, data={})
                    time.sleep(0.005)
                written[slot] += 1
        except BaseException as exc:  # noqa: BLE001 (reported after the run)
            failures.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=write, args=(slot,)) for slot in range(WRITERS)]
    for thread in threads:
        thread.start()
    samples = waiting = 0
    with connection.cursor() as cursor:
        while any(thread.is_alive() for thread in threads):
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity"
                " WHERE datname = current_database() AND wait_event_type = 'Lock'"
            )
            waiting += cursor.fetchone()[0]
            samples += 1
            time.sleep(0.01)
    for thread in threads:
        thread.join()
    if failures:
        raise BenchFailure(f"a writer failed: {failures[0]!r}")
    return {"rate": sum(written) / SECONDS, "samples": samples, "waiting": waiting}


def _fill(count: int) -> None:
    have = AuditEvent.objects.count()
    with connection.cursor() as cursor:
        for first in range(have, count, 100_000):
            with transaction.atomic():
                cursor.execute(_FILL_SQL, [first, min(count, first + 100_000) - 1])


def main() -> list[dict[str, Any]]:
    _check_services()
    _migrate(_server_env("bench-audit"))
    workflow, _ = Workflow.objects.get_or_create(slug="bench-audit", defaults={"name": "Bench"})
    writers = _writers(workflow)
    _fill(EVENTS)
    began = time.perf_counter()
    integrated = 0
    while (checkpoint := log_integrate(limit=SEQUENCER_BATCH)) is not None:
        integrated = checkpoint.size
    sequenced = time.perf_counter() - began
    samples = []
    checked = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        report = audit_verify()
        samples.append(time.perf_counter() - start)
        if not report.intact:
            raise BenchFailure(f"the log does not verify: {report}")
        checked = report.checked
    ordered = sorted(samples)
    median = ordered[len(ordered) // 2]
    rate = checked / median
    return [
        {
            "bench": "audit",
            "case": f"{WRITERS} writers, a proposal's 3 events each, transaction held 5 ms",
            "n": int(writers["rate"] * SECONDS),
            "per_second": writers["rate"],
            "target": f"backends waiting on a lock: {writers['waiting']} in "
            f"{writers['samples']} samples",
            "met": writers["waiting"] == 0,
        },
        {
            "bench": "audit",
            "case": f"sequencer: {integrated:,} events into the log, {SEQUENCER_BATCH:,} a batch",
            "n": 1,
            "p50_us": sequenced * 1e6,
            "per_second": integrated / sequenced,
        },
        {
            "bench": "audit",
            "case": f"audit_verify: whole log of {checked:,} entries (median of {RUNS})",
            "n": RUNS,
            "p50_us": median * 1e6,
            "p90_us": ordered[-1] * 1e6,
            "per_second": rate,
            "target": f"> {TARGET_PER_SECOND:,} events/s ({rate:,.0f}/s)",
            "met": rate > TARGET_PER_SECOND,
        },
    ]
