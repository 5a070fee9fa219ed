"""The circuit breaker, one implementation for every kind of circuit (a tool's, a model
provider's: see Circuit in apps/core/models.py).

After `threshold` consecutive failures a circuit opens: calls are refused without reaching the
other side until `cooldown_seconds` have passed; then one call probes, and its outcome closes or
re-opens the circuit. The state lives in the database so that every worker shares it, and every
change is a conditional UPDATE that also stamps updated_at, so that concurrent workers agree on
one probe and a probe whose worker died can be recognised by its age.

Each function takes the concrete model and the `key` that names its one row (`{"tool": tool}`,
`{"provider": "openai"}`); the row is created on first use, and a missing row means closed."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta
from typing import Any

from django.db.models import F, Q, QuerySet
from django.utils import timezone

from apps.core.models import Circuit, CircuitState

# Room enough for a stack of causes; the whole of a huge error body is of no use to anyone.
ERROR_MAX_CHARS = 2000


def _rows[C: Circuit](model: type[C], key: Mapping[str, Any]) -> QuerySet[C]:
    return model._default_manager.filter(**key)


def _row[C: Circuit](model: type[C], key: Mapping[str, Any]) -> C:
    circuit, _ = model._default_manager.get_or_create(**key)
    return circuit


def breaker_allows[C: Circuit](
    *, model: type[C], key: Mapping[str, Any], cooldown_seconds: float
) -> bool:
    """May a call go through now? Claims the probe when the cool-down has passed, so that of
    many workers asking at once exactly one gets it. A probe that never reported back (its
    worker died) is given up after another cool-down, so that a half-open circuit cannot stay
    stuck."""
    circuit = _row(model, key)
    if circuit.state == CircuitState.CLOSED:
        return True
    this = model._default_manager.filter(pk=circuit.pk)
    now = timezone.now()
    cooled = now - timedelta(seconds=cooldown_seconds)
    if circuit.state == CircuitState.HALF_OPEN:
        # updated_at moves with every claim, so only one worker wins a stale probe.
        stale = this.filter(state=CircuitState.HALF_OPEN, updated_at__lte=cooled)
        return stale.update(updated_at=now) == 1
    cooled_off = this.filter(state=CircuitState.OPEN, opened_at__lte=cooled)
    return cooled_off.update(state=CircuitState.HALF_OPEN, updated_at=now) == 1


def breaker_refusing[C: Circuit](
    *, model: type[C], key: Mapping[str, Any], cooldown_seconds: float
) -> C | None:
    """The circuit while it is open and cooling down, else None. A read only (nothing is
    claimed): for holding new work back before it is queued. Once the cool-down has passed work
    is let through again, so that one call can probe: holding it all back would keep the
    circuit open for ever."""
    cooling_since = timezone.now() - timedelta(seconds=cooldown_seconds)
    cooling = Q(opened_at__isnull=True) | Q(opened_at__gt=cooling_since)
    return _rows(model, key).filter(cooling, state=CircuitState.OPEN).first()


def breaker_success[C: Circuit](*, model: type[C], key: Mapping[str, Any]) -> None:
    """A call went through: the circuit closes and the failures are forgotten. Writes nothing
    when it is closed already (the common case), so that healthy traffic costs no UPDATE."""
    _rows(model, key).exclude(state=CircuitState.CLOSED, consecutive_failures=0).update(
        state=CircuitState.CLOSED,
        consecutive_failures=0,
        opened_at=None,
        updated_at=timezone.now(),
    )


def breaker_failure[C: Circuit](
    *, model: type[C], key: Mapping[str, Any], error: str, threshold: int
) -> bool:
    """Count a failure; True when this failure opened (or re-opened) the circuit, so that the
    caller can say so once rather than on every failure while it is open."""
    this = model._default_manager.filter(pk=_row(model, key).pk)
    now = timezone.now()
    this.update(
        consecutive_failures=F("consecutive_failures") + 1,
        last_error=error[:ERROR_MAX_CHARS],
        updated_at=now,
    )
    # A failed probe re-opens at once; a closed circuit opens at the threshold. Only one of
    # several workers failing together matches, since the first one's UPDATE moves the state.
    opening = this.filter(
        Q(state=CircuitState.HALF_OPEN)
        | Q(state=CircuitState.CLOSED, consecutive_failures__gte=threshold)
    )
    return opening.update(state=CircuitState.OPEN, opened_at=now, updated_at=now) == 1


def breaker_last_error[C: Circuit](*, model: type[C], key: Mapping[str, Any]) -> str:
    """The error of the latest failure, to tell the caller why a call was refused."""
    return _rows(model, key).values_list("last_error", flat=True).first() or ""
