"""The circuit breaker of each model provider, named for the providers: the provider's
threshold and cool-down from its configuration over the one breaker in apps/core/breaker.py.
After `threshold` consecutive failed calls calls are refused without reaching the provider
until the cool-down has passed; then one call probes, and its outcome closes or re-opens it."""

from __future__ import annotations

from apps.core.breaker import breaker_allows, breaker_failure, breaker_last_error, breaker_success
from apps.runtime.models import ProviderCircuit


def provider_allows(provider: str, *, cooldown_seconds: float) -> bool:
    return breaker_allows(
        model=ProviderCircuit, key={"provider": provider}, cooldown_seconds=cooldown_seconds
    )


def provider_success(provider: str) -> None:
    breaker_success(model=ProviderCircuit, key={"provider": provider})


def provider_failure(provider: str, error: str, *, threshold: int) -> bool:
    """Count a failure; True when this failure opened (or re-opened) the circuit."""
    return breaker_failure(
        model=ProviderCircuit, key={"provider": provider}, error=error, threshold=threshold
    )


def provider_last_error(provider: str) -> str:
    return breaker_last_error(model=ProviderCircuit, key={"provider": provider})
