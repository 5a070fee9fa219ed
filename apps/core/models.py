from __future__ import annotations

from django.db import models


class Heartbeat(models.Model):
    """The last time a background component proved it was alive (the scheduler's beat runs a
    task on a worker that stamps this row)."""

    component = models.CharField(max_length=40, unique=True)
    last_seen = models.DateTimeField()

    def __str__(self) -> str:
        return f"{self.component} @ {self.last_seen:%Y-%m-%d %H:%M:%S}"


class CircuitState(models.TextChoices):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class Circuit(models.Model):
    """The circuit breaker of one thing the product calls (a tool, a model provider): closed
    (calls go through), open (calls refused until the cool-down has passed), half open (one
    probe call decides). A row in the database, so that every worker shares it; apps/core/
    breaker.py is the only code that changes it. Each concrete circuit adds the field naming
    what it guards."""

    State = CircuitState  # so that callers can write ToolCircuit.State.OPEN

    state = models.CharField(
        max_length=9, choices=CircuitState.choices, default=CircuitState.CLOSED
    )
    consecutive_failures = models.PositiveIntegerField(default=0)
    opened_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # auto_now covers save(); the breaker's UPDATEs set it themselves, since a stale half-open
    # probe is recognised by it.
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        abstract = True
