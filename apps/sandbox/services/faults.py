"""The faults switch: makes the sandbox slow, failing or flaky on purpose, so that a demo (and
the tests of whatever calls it) can show timeouts, retries and circuit breakers for real."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction

from apps.sandbox.models import FaultMode, SandboxFaults
from apps.sandbox.params import SandboxError
from apps.sandbox.selectors import faults_current

logger = logging.getLogger(__name__)

MAX_DELAY_MS = 60_000
# "slow" without a delay would be healthy under another name.
DEFAULT_SLOW_DELAY_MS = 2_000


@dataclass(frozen=True)
class FaultVerdict:
    """What the switch says about the request at hand."""

    mode: str
    fail: bool = False
    delay_ms: int = 0


@transaction.atomic
def faults_set(*, mode: str, delay_ms: int | None = None) -> SandboxFaults:
    """Set the switch; the flaky count starts again, so the next request after it fails."""
    if mode not in FaultMode.values:
        raise SandboxError(
            400, f"{mode!r} is not a mode; modes are {', '.join(FaultMode.values)}", "mode"
        )
    if delay_ms is None:
        delay_ms = DEFAULT_SLOW_DELAY_MS if mode == FaultMode.SLOW else 0
    if not 0 <= delay_ms <= MAX_DELAY_MS:
        raise SandboxError(400, f"must be between 0 and {MAX_DELAY_MS}", "delay_ms")
    faults, _ = SandboxFaults.objects.update_or_create(
        pk=SandboxFaults.SINGLETON, defaults={"mode": mode, "delay_ms": delay_ms, "calls": 0}
    )
    logger.info("sandbox faults set to %s", mode, extra={"mode": mode, "delay_ms": delay_ms})
    return faults


def faults_verdict() -> FaultVerdict:
    """Decide whether the request at hand fails or waits. Counts the request in flaky mode."""
    faults = faults_current()
    if faults.mode == FaultMode.SLOW:
        return FaultVerdict(mode=faults.mode, delay_ms=faults.delay_ms)
    if faults.mode == FaultMode.FAILING:
        return FaultVerdict(mode=faults.mode, fail=True)
    if faults.mode == FaultMode.FLAKY:
        with transaction.atomic():
            # The row lock makes "every other request" exact under concurrent callers.
            locked = SandboxFaults.objects.select_for_update().filter(pk=faults.pk).first()
            if locked is None or locked.mode != FaultMode.FLAKY:
                return FaultVerdict(mode=FaultMode.HEALTHY)
            locked.calls += 1
            locked.save(update_fields=["calls"])
            return FaultVerdict(mode=locked.mode, fail=locked.calls % 2 == 1)
    return FaultVerdict(mode=FaultMode.HEALTHY)
