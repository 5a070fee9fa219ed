"""The circuit breaker of each model provider, in the database so that every worker shares it.

After `threshold` consecutive failed calls the circuit opens: calls are refused without
reaching the provider until the cool-down has passed; then one call probes, and its outcome
closes or re-opens it. Every change is a conditional UPDATE, so concurrent workers agree on
one probe."""

from __future__ import annotations

from datetime import timedelta

from django.db.models import F, Q
from django.utils import timezone

from apps.runtime.models import ProviderCircuit


def provider_allows(provider: str, *, cooldown_seconds: float) -> bool:
    circuit, _ = ProviderCircuit.objects.get_or_create(provider=provider)
    if circuit.state == ProviderCircuit.State.CLOSED:
        return True
    cooled = timezone.now() - timedelta(seconds=cooldown_seconds)
    if circuit.state == ProviderCircuit.State.HALF_OPEN:
        # A probe that never reported back is given up after another cool-down.
        claimed = ProviderCircuit.objects.filter(
            pk=circuit.pk, state=ProviderCircuit.State.HALF_OPEN, updated_at__lte=cooled
        ).update(updated_at=timezone.now())
        return claimed == 1
    claimed = ProviderCircuit.objects.filter(
        pk=circuit.pk, state=ProviderCircuit.State.OPEN, opened_at__lte=cooled
    ).update(state=ProviderCircuit.State.HALF_OPEN, updated_at=timezone.now())
    return claimed == 1


def provider_success(provider: str) -> None:
    ProviderCircuit.objects.filter(provider=provider).exclude(
        state=ProviderCircuit.State.CLOSED, consecutive_failures=0
    ).update(
        state=ProviderCircuit.State.CLOSED,
        consecutive_failures=0,
        opened_at=None,
        updated_at=timezone.now(),
    )


def provider_failure(provider: str, error: str, *, threshold: int) -> bool:
    """Count a failure; True when this failure opened (or re-opened) the circuit."""
    circuit, _ = ProviderCircuit.objects.get_or_create(provider=provider)
    now = timezone.now()
    ProviderCircuit.objects.filter(pk=circuit.pk).update(
        consecutive_failures=F("consecutive_failures") + 1, last_error=error[:2000], updated_at=now
    )
    opened = ProviderCircuit.objects.filter(
        Q(state=ProviderCircuit.State.HALF_OPEN)
        | Q(state=ProviderCircuit.State.CLOSED, consecutive_failures__gte=threshold),
        pk=circuit.pk,
    ).update(state=ProviderCircuit.State.OPEN, opened_at=now, updated_at=now)
    return opened == 1


def provider_last_error(provider: str) -> str:
    circuit = ProviderCircuit.objects.filter(provider=provider).first()
    return circuit.last_error if circuit else ""
