"""Audit chain verification (PRODUCT.md section 6: > 100,000 events/s).

Needs PostgreSQL (`make bench` provides it). The chain is brought to BENCH_AUDIT_EVENTS events
(default 200,000) by appending to it through the audit trail's own append (`_append`, what every
audited change goes through: one lock of the chain's head, hashes chained in order), in batches
of 5,000, with payloads like the gate's (an action's transition with its params and reasons);
then `audit_verify` (what `manage.py audit_verify` and the audit page run) walks the whole chain,
recomputing every payload digest, every hash and every link, BENCH_AUDIT_RUNS times.
"""

from __future__ import annotations

import os
import time
import uuid
from datetime import timedelta
from typing import Any

from django.db import transaction
from django.utils import timezone

from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.audit.services import _append, _Pending, payload_digest
from bench.bench_gate import BenchFailure, _check_services, _migrate, _server_env

EVENTS = int(os.environ.get("BENCH_AUDIT_EVENTS", "200000"))
RUNS = int(os.environ.get("BENCH_AUDIT_RUNS", "3"))
TARGET_PER_SECOND = 100_000
BATCH = 5_000


def _payload(index: int) -> dict[str, Any]:
    return {
        "from": "queued",
        "to": "running",
        "params": {
            "order_id": str(1000 + index % 9000),
            "amount_cents": 100 + index * 7919 % 59_900,
            "currency": "EUR",
            "reason": "damaged",
        },
        "reasons": [
            {"id": "refunds-under-cap", "message": "Refunds up to 50.00 EUR run on their own"}
        ],
    }


def _fill(count: int) -> None:
    missing = count - AuditEvent.objects.count()
    start = timezone.now() - timedelta(days=30)
    for first in range(0, max(0, missing), BATCH):
        entries = []
        for index in range(first, min(missing, first + BATCH)):
            payload = _payload(index)
            entries.append(
                _Pending(
                    created_at=start + timedelta(milliseconds=index),
                    actor_type="system",
                    actor="system:worker",
                    verb="action.running",
                    target_type="action",
                    target_id=str(uuid.uuid4()),
                    subject=f"order:{1000 + index % 9000}",
                    payload=payload,
                    digest=payload_digest(payload),
                    trace_id=f"{index:032x}" if index % 2 else "",
                )
            )
        with transaction.atomic():
            _append(entries)


def main() -> list[dict[str, Any]]:
    _check_services()
    _migrate(_server_env("bench-audit"))
    _fill(EVENTS)
    samples = []
    checked = 0
    for _ in range(RUNS):
        start = time.perf_counter()
        report = audit_verify()
        samples.append(time.perf_counter() - start)
        if not report.intact:
            raise BenchFailure(f"the chain does not verify: {report}")
        checked = report.checked
    ordered = sorted(samples)
    median = ordered[len(ordered) // 2]
    rate = checked / median
    return [
        {
            "bench": "audit",
            "case": (
                f"audit_verify: whole chain of {checked:,} events, recomputed (median of {RUNS})"
            ),
            "n": RUNS,
            "p50_us": median * 1e6,
            "p90_us": ordered[-1] * 1e6,
            "per_second": rate,
            "target": f"> {TARGET_PER_SECOND:,} events/s ({rate:,.0f}/s)",
            "met": rate > TARGET_PER_SECOND,
        }
    ]
