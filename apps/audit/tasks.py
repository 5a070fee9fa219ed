"""The audit log's work on the Celery workers: the sequencer, and full verifications started
from the audit page, with their progress kept in Redis for the page to show."""

from __future__ import annotations

import json
import logging
import time
from typing import Any

import redis
from celery import shared_task
from django.conf import settings
from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone
from escapement_client.transparency import TransparencyError

from apps.audit.log import log_integrate_all, witness_notes
from apps.audit.models import AuditCheckpoint
from apps.audit.selectors import LogReport, audit_verify
from apps.audit.services import audit_record
from apps.core.workers import task_send

logger = logging.getLogger(__name__)

# A running verification writes its progress under this key (one per database, as several
# installations may share a Redis); it expires so that a worker lost mid-run does not leave the
# page saying "running" for ever.
PROGRESS_TTL_SECONDS = 15 * 60


def progress_key() -> str:
    return f"escapement:audit:verification:{connection.settings_dict['NAME']}"


def progress_store() -> redis.Redis:
    return redis.Redis.from_url(settings.CELERY_BROKER_URL, socket_timeout=2)


@shared_task(name="audit.integrate", ignore_result=True)
def integrate() -> None:
    """Take committed events into the log and sign a checkpoint (the scheduler sends this every
    two seconds; a run that finds another running returns at once)."""
    log_integrate_all()


def verification_progress() -> dict[str, Any] | None:
    """The running (or just finished) verification: state, entries checked, of how many."""
    try:
        raw = progress_store().get(progress_key())
    except redis.RedisError:
        return None
    return json.loads(raw) if raw else None


def verification_start(*, user: Any) -> bool:
    """Start a full verification on a worker, unless one is running; False when one is."""
    client = progress_store()
    # One at a time: the first to set the flag starts it; the run clears it when done.
    if not client.set(progress_key() + ":running", "1", nx=True, ex=PROGRESS_TTL_SECONDS):
        return False
    latest = AuditCheckpoint.objects.order_by("-size").values_list("size", flat=True).first()
    state = {
        "state": "queued",
        "checked": 0,
        "size": latest or 0,
        "started_at": timezone.now().isoformat(),
        "by": user.get_username(),
    }
    client.set(progress_key(), json.dumps(state), ex=PROGRESS_TTL_SECONDS)
    try:
        task_send("audit.verify", state["by"])
    except Exception:
        client.delete(progress_key(), progress_key() + ":running")
        raise
    return True


@shared_task(name="audit.verify", ignore_result=True)
def verify(username: str) -> None:
    """Verify the whole log, writing progress as it goes, and record the verdict in the trail
    (the audit page's "last full verification" is the newest of these)."""
    client = progress_store()
    state: dict[str, Any] = verification_progress() or {"size": 0}
    state.update(state="running", checked=0)
    began = time.monotonic()

    def progress(checked: int) -> None:
        state["checked"] = checked
        client.set(progress_key(), json.dumps(state), ex=PROGRESS_TTL_SECONDS)

    try:
        progress(0)
        try:
            kept = witness_notes()
        except (OSError, TransparencyError) as exc:
            report = LogReport(False, 0, 0, problem=f"the witness file cannot be read: {exc}")
        else:
            report = audit_verify(kept=kept, progress=progress)
        seconds = round(time.monotonic() - began, 3)
        checkpoint = AuditCheckpoint.objects.order_by("-size").first()
        # The verdict is recorded against the newest checkpoint; an empty log has nothing to hold.
        if checkpoint is not None:
            with transaction.atomic():
                audit_record(
                    actor=User.objects.filter(username=username).first() or "audit-verify",
                    verb="audit.verified",
                    target=checkpoint,
                    data={
                        "intact": report.intact,
                        "checked": report.checked,
                        "checkpoints": report.checkpoints,
                        "pending": report.pending,
                        "problem": report.problem,
                        "seconds": seconds,
                    },
                )
        state.update(state="done", checked=report.checked, intact=report.intact)
        state["problem"] = report.problem
        client.set(progress_key(), json.dumps(state), ex=PROGRESS_TTL_SECONDS)
    finally:
        client.delete(progress_key() + ":running")
    if not report.intact:
        logger.error("audit log verification failed: %s", report.problem)
