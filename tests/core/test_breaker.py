"""The one circuit breaker, on both kinds of circuit (a tool's and a model provider's), against
real PostgreSQL: it opens at the threshold, refuses while cooling down, lets exactly one probe
through afterwards, and the probe's outcome closes or re-opens it."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import pytest
from django.utils import timezone

from apps.actions.models import ToolCircuit
from apps.core.breaker import (
    breaker_allows,
    breaker_failure,
    breaker_last_error,
    breaker_refusing,
    breaker_success,
)
from apps.core.models import Circuit, CircuitState
from apps.runtime.models import ProviderCircuit
from tests.concurrency import at_once
from tests.factories import make_tool

pytestmark = pytest.mark.django_db

THRESHOLD = 3
COOLDOWN = 30.0
AN_HOUR_AGO = timedelta(hours=1)


@dataclass(frozen=True)
class Guarded:
    """One circuit as the breaker sees it: its model and the key of its row."""

    model: type[Circuit]
    key: dict[str, Any]

    def row(self) -> Circuit:
        return self.model._default_manager.get(**self.key)

    def set(self, **values: Any) -> None:
        """Put the row in a state directly, as time passing (or a dead worker) would leave it."""
        self.model._default_manager.filter(**self.key).update(**values)

    def allows(self) -> bool:
        return breaker_allows(model=self.model, key=self.key, cooldown_seconds=COOLDOWN)

    def refusing(self) -> Circuit | None:
        return breaker_refusing(model=self.model, key=self.key, cooldown_seconds=COOLDOWN)

    def fail(self, error: str = "503 from the other side") -> bool:
        return breaker_failure(model=self.model, key=self.key, error=error, threshold=THRESHOLD)

    def succeed(self) -> None:
        breaker_success(model=self.model, key=self.key)

    def open_since(self, opened_at: datetime) -> None:
        for _ in range(THRESHOLD):
            self.fail()
        self.set(opened_at=opened_at)


@pytest.fixture(params=["tool", "provider"])
def guarded(request: pytest.FixtureRequest) -> Guarded:
    if request.param == "tool":
        return Guarded(ToolCircuit, {"tool": make_tool()})
    return Guarded(ProviderCircuit, {"provider": "acme-models"})


def test_breaker_failure__below_threshold__stays_closed(guarded: Guarded) -> None:
    # Given a circuit that has never failed
    # When it fails once less than the threshold
    opened = [guarded.fail(f"503 number {n}") for n in range(THRESHOLD - 1)]

    # Then it is still closed and lets calls through, with the count and the last error kept
    assert opened == [False] * (THRESHOLD - 1)
    assert guarded.allows() is True
    circuit = guarded.row()
    assert (circuit.state, circuit.consecutive_failures, circuit.opened_at) == (
        CircuitState.CLOSED,
        THRESHOLD - 1,
        None,
    )
    assert breaker_last_error(model=guarded.model, key=guarded.key) == "503 number 1"


def test_breaker_failure__reaches_threshold__opens_once(guarded: Guarded) -> None:
    # Given a circuit one failure short of the threshold
    for _ in range(THRESHOLD - 1):
        guarded.fail()

    # When it fails at the threshold, and once more
    at_threshold = guarded.fail("503 at the threshold")
    after = guarded.fail("503 while open")

    # Then the threshold failure opened it (the later one only counts), and calls are refused
    assert (at_threshold, after) == (True, False)
    circuit = guarded.row()
    assert circuit.state == CircuitState.OPEN
    assert circuit.consecutive_failures == THRESHOLD + 1
    assert circuit.opened_at is not None
    assert breaker_last_error(model=guarded.model, key=guarded.key) == "503 while open"
    assert guarded.allows() is False


def test_breaker_refusing__open_and_cooling__returns_circuit(guarded: Guarded) -> None:
    # Given a circuit that opened a moment ago
    guarded.open_since(timezone.now())

    # When the gate and the workers ask
    # Then new work is held back and no call goes through
    refusing = guarded.refusing()
    assert refusing is not None
    assert refusing.pk == guarded.row().pk
    assert [guarded.allows() for _ in range(3)] == [False, False, False]
    assert guarded.row().state == CircuitState.OPEN


def test_breaker_refusing__cooled_down__lets_work_through(guarded: Guarded) -> None:
    # Given a circuit that opened an hour ago, longer than its cool-down
    guarded.open_since(timezone.now() - AN_HOUR_AGO)

    # When the gate asks
    # Then it does not hold new work back (one of its calls must be able to probe)
    assert guarded.refusing() is None


def test_breaker_refusing__closed_or_never_used__returns_none(guarded: Guarded) -> None:
    # Given a circuit with no row yet, then a closed one
    # Then neither holds work back, and the read made no row
    assert guarded.refusing() is None
    assert not guarded.model._default_manager.filter(**guarded.key).exists()
    guarded.fail()
    assert guarded.refusing() is None


@pytest.mark.django_db(transaction=True)
def test_breaker_allows__cooled_down_concurrent_claims__exactly_one_probe(
    guarded: Guarded,
) -> None:
    # Given a circuit that opened an hour ago, longer than its cool-down
    guarded.open_since(timezone.now() - AN_HOUR_AGO)

    # When eight workers ask at the same moment
    claims = at_once(8, lambda _: guarded.allows())

    # Then exactly one of them probes, the circuit is half open, and later askers wait
    assert sorted(claims) == [False] * 7 + [True]
    assert guarded.row().state == CircuitState.HALF_OPEN
    assert guarded.allows() is False


def test_breaker_success__after_probe__closes(guarded: Guarded) -> None:
    # Given a probe let through after the cool-down
    guarded.open_since(timezone.now() - AN_HOUR_AGO)
    assert guarded.allows() is True

    # When the probe succeeds
    guarded.succeed()

    # Then the circuit is closed with its failures forgotten, and calls go through again
    circuit = guarded.row()
    assert (circuit.state, circuit.consecutive_failures, circuit.opened_at) == (
        CircuitState.CLOSED,
        0,
        None,
    )
    assert [guarded.allows() for _ in range(3)] == [True, True, True]


def test_breaker_success__never_failed__writes_no_row(guarded: Guarded) -> None:
    # Given a circuit with no row yet
    # When a call succeeds
    guarded.succeed()

    # Then nothing was written (a missing row is a closed circuit)
    assert not guarded.model._default_manager.filter(**guarded.key).exists()


def test_breaker_failure__probe_fails__reopens_for_another_cooldown(guarded: Guarded) -> None:
    # Given a probe let through after the cool-down
    guarded.open_since(timezone.now() - AN_HOUR_AGO)
    assert guarded.allows() is True
    before = timezone.now()

    # When the probe fails
    reopened = guarded.fail("still 503")

    # Then the circuit is open again from now, and refuses for another cool-down
    assert reopened is True
    circuit = guarded.row()
    assert circuit.state == CircuitState.OPEN
    assert circuit.opened_at is not None
    assert circuit.opened_at >= before
    assert guarded.allows() is False
    assert guarded.refusing() is not None


def test_breaker_allows__fresh_half_open__refuses(guarded: Guarded) -> None:
    # Given a probe claimed a moment ago, not yet reported back
    guarded.open_since(timezone.now() - AN_HOUR_AGO)
    assert guarded.allows() is True

    # When other workers ask
    # Then they wait for it
    assert guarded.allows() is False
    assert guarded.row().state == CircuitState.HALF_OPEN


@pytest.mark.django_db(transaction=True)
def test_breaker_allows__stale_half_open_probe__given_up_to_one_new_probe(
    guarded: Guarded,
) -> None:
    # Given a probe claimed an hour ago whose worker died before reporting back
    guarded.open_since(timezone.now() - 2 * AN_HOUR_AGO)
    assert guarded.allows() is True
    guarded.set(updated_at=timezone.now() - AN_HOUR_AGO)

    # When eight workers ask at the same moment
    claims = at_once(8, lambda _: guarded.allows())

    # Then exactly one of them gets a new probe, and the circuit stays half open
    assert sorted(claims) == [False] * 7 + [True]
    assert guarded.row().state == CircuitState.HALF_OPEN


def test_breaker__every_change__moves_updated_at(guarded: Guarded) -> None:
    # Given a circuit, made to look an hour old before each change
    def changed(change: Any) -> bool:
        guarded.set(updated_at=timezone.now() - AN_HOUR_AGO)
        before = timezone.now()
        change()
        return guarded.row().updated_at >= before

    guarded.fail()

    # When it counts a failure, opens, gives a probe, closes, opens again and re-opens
    # Then each of those changes stamped updated_at
    assert changed(guarded.fail)
    assert changed(guarded.fail)  # the threshold: opens
    assert guarded.row().state == CircuitState.OPEN
    guarded.set(opened_at=timezone.now() - AN_HOUR_AGO)
    assert changed(guarded.allows)  # the probe
    assert guarded.row().state == CircuitState.HALF_OPEN
    assert changed(guarded.succeed)
    assert guarded.row().state == CircuitState.CLOSED
    guarded.open_since(timezone.now() - AN_HOUR_AGO)
    assert guarded.allows() is True
    assert changed(guarded.fail)  # the failed probe: re-opens
    assert guarded.row().state == CircuitState.OPEN


def test_circuit_state__concrete_models__share_the_states() -> None:
    # Callers name the states through either concrete model
    assert ToolCircuit.State is ProviderCircuit.State is CircuitState
    assert ToolCircuit.State.HALF_OPEN.value == "half_open"
