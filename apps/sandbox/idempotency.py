"""Idempotency keys, the way payment providers do them.

The first request with a key runs, and its answer (success or a 4xx) is stored with the digest
of its params, in the same transaction as its effect. The same key with the same params gets the
stored answer back and changes nothing; with other params, a 409. A 5xx, a crash or a timeout
stores nothing, so the caller's retry runs for real.

Concurrent twins: the unique (endpoint, key) index makes the second insert wait for the first
transaction, then fail; the loser then reads the winner's committed answer. So twenty copies of
one request sent at once make exactly one effect."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.db import IntegrityError, transaction

from apps.sandbox.models import IdempotencyRecord
from apps.sandbox.params import SandboxError

KEY_REUSED = "idempotency key reused with different params"


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any]
    replayed: bool = False


def params_digest(params: Any) -> str:
    # Canonical JSON: the same params in another key order or spacing are the same request.
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


def run_answer(perform: Callable[[], Answer]) -> Answer:
    """Run `perform` in a savepoint; a SandboxError becomes its 4xx answer and leaves nothing
    behind of what `perform` wrote before raising."""
    try:
        with transaction.atomic():
            return perform()
    except SandboxError as exc:
        return Answer(exc.status, exc.body())


def _locked(endpoint: str, key: str) -> IdempotencyRecord | None:
    return IdempotencyRecord.objects.select_for_update().filter(endpoint=endpoint, key=key).first()


def _replay(record: IdempotencyRecord, digest: str) -> Answer:
    if record.digest != digest:
        return Answer(409, {"ok": False, "error": KEY_REUSED})
    if record.status is None or not isinstance(record.response, dict):
        # Only reachable if a row was written outside this module; never answer with nothing.
        raise RuntimeError(f"idempotency record {record.pk} holds no answer")
    return Answer(record.status, record.response, replayed=True)


@transaction.atomic
def answer_once(
    *,
    endpoint: str,
    key: str,
    params: Any,
    action_ref: str,
    perform: Callable[[], Answer],
) -> Answer:
    """The answer to `params` under `key` at `endpoint`: `perform`'s, the first time only."""
    digest = params_digest(params)
    record = _locked(endpoint, key)
    if record is not None:
        return _replay(record, digest)
    try:
        with transaction.atomic():
            record = IdempotencyRecord.objects.create(
                endpoint=endpoint, key=key, digest=digest, action_ref=action_ref
            )
    except IntegrityError:
        # A twin inserted the key first and has committed by now (the insert waited for it).
        twin = _locked(endpoint, key)
        if twin is None:
            raise
        return _replay(twin, digest)
    answer = run_answer(perform)
    record.status = answer.status
    record.response = answer.body
    record.save(update_fields=["status", "response"])
    return answer
