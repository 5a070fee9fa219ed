"""The agent runtime: hosted runs and their steps, every model call with its cost, the budgets
those costs count against, and the circuit breaker of each model provider.

Money is Decimal minor units (cents) with six decimal places: a model call costs fractions of
a cent, and the figures must add up exactly."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.actions.models import Action
from apps.core.models import Circuit
from apps.registry.models import Agent, Workflow

ZERO = Decimal(0)


class Run(models.Model):
    """One piece of work for one subject of one workflow (ticket 881, order 1042), carried out
    by the workflow's hosted agent as a sequence of steps."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting", "waiting for a person"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="runs")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="runs")
    subject = models.CharField(max_length=200, blank=True)
    input = models.JSONField(default=dict)
    state = models.CharField(max_length=9, choices=State.choices, default=State.QUEUED)
    source = models.CharField(max_length=20, default="manual", help_text="demo, api, manual")
    trace_id = models.CharField(max_length=100, blank=True)
    error = models.TextField(blank=True)
    escalated_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escalated_runs",
        help_text="the escalation owner who must look at a failed run",
    )
    cost_cents = models.DecimalField(max_digits=20, decimal_places=6, default=ZERO)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["created_at"]),
            models.Index(fields=["state", "created_at"]),
            models.Index(fields=["workflow", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"run {self.pk} ({self.workflow_id}, {self.state})"


class Step(models.Model):
    """One registered step function of a run, executed by a Celery worker within its time
    budget. A step whose action is held waits (no worker is held) until a person decides."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        WAITING = "waiting", "waiting for a person"
        SUCCEEDED = "succeeded"
        FAILED = "failed"

    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="steps")
    index = models.PositiveSmallIntegerField()
    name = models.CharField(max_length=63)
    state = models.CharField(max_length=9, choices=State.choices, default=State.QUEUED)
    attempts = models.PositiveSmallIntegerField(default=0)
    time_budget_seconds = models.FloatField()
    output = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    cost_cents = models.DecimalField(max_digits=20, decimal_places=6, default=ZERO)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    attempt_started_at = models.DateTimeField(null=True, blank=True)
    waiting_since = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["run", "index"]
        constraints = [models.UniqueConstraint(fields=["run", "index"], name="one_step_per_index")]
        indexes = [models.Index(fields=["state"], name="runtime_step_state")]

    def __str__(self) -> str:
        return f"step {self.index} {self.name} of {self.run_id} ({self.state})"

    @property
    def duration_seconds(self) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at or timezone.now()
        return (end - self.started_at).total_seconds()


class StepAction(models.Model):
    """An action a step proposed through the gate."""

    step = models.ForeignKey(Step, on_delete=models.CASCADE, related_name="step_actions")
    action = models.OneToOneField(Action, on_delete=models.PROTECT, related_name="runtime_step")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"{self.action_id} of step {self.step_id}"


class ModelCall(models.Model):
    """One call to a model (or a deterministic stand-in), or the usage an external agent
    reported with a proposal: tokens, cost from the model price table, latency, and what it
    served."""

    class Source(models.TextChoices):
        HOSTED = "hosted", "hosted step"
        EXTERNAL = "external", "reported by an external agent"

    class Outcome(models.TextChoices):
        OK = "ok"
        FAILED = "failed"
        REFUSED = "refused", "refused by a budget"

    created_at = models.DateTimeField(default=timezone.now)
    source = models.CharField(max_length=8, choices=Source.choices, default=Source.HOSTED)
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="model_calls")
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="model_calls")
    run = models.ForeignKey(
        Run, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_calls"
    )
    step = models.ForeignKey(
        Step, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_calls"
    )
    action = models.ForeignKey(
        Action, on_delete=models.SET_NULL, null=True, blank=True, related_name="model_calls"
    )
    task = models.CharField(max_length=63, blank=True)
    tier = models.CharField(max_length=13, blank=True)
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=120)
    input_tokens = models.PositiveIntegerField(default=0)
    output_tokens = models.PositiveIntegerField(default=0)
    cost_cents = models.DecimalField(max_digits=20, decimal_places=6, default=ZERO)
    currency = models.CharField(max_length=3, default="USD")
    priced = models.BooleanField(default=True, help_text="false: no price for this model")
    latency_ms = models.PositiveIntegerField(default=0)
    pii_counts = models.JSONField(default=dict, blank=True)
    pii_masked = models.PositiveIntegerField(default=0)
    outcome = models.CharField(max_length=8, choices=Outcome.choices, default=Outcome.OK)
    error = models.TextField(blank=True)
    escalation = models.CharField(
        max_length=200, blank=True, help_text="why this call went a tier up from the previous one"
    )

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["workflow", "created_at"]),
            models.Index(fields=["agent", "created_at"]),
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model} {self.cost_cents} ({self.outcome})"


class AgentBudget(models.Model):
    """The monthly model budget of one agent (a workflow's comes from its Decision Book)."""

    agent = models.OneToOneField(Agent, on_delete=models.CASCADE, related_name="budget")
    monthly_limit_cents = models.PositiveBigIntegerField()
    soft_limit_percent = models.PositiveSmallIntegerField(
        default=80, validators=[MinValueValidator(1), MaxValueValidator(100)]
    )

    def __str__(self) -> str:
        return f"budget of {self.agent_id}: {self.monthly_limit_cents}"


class BudgetPeriod(models.Model):
    """What one budget (a workflow's or an agent's) has reserved and spent in one month.

    Reservations are conditional updates of this row (`reserved + spent + amount <= limit`),
    so concurrent calls can never reserve past the limit."""

    class Scope(models.TextChoices):
        WORKFLOW = "workflow"
        AGENT = "agent"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    workflow = models.ForeignKey(
        Workflow, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    agent = models.ForeignKey(
        Agent, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    month = models.DateField(help_text="the first day of the month")
    limit_cents = models.DecimalField(
        max_digits=20,
        decimal_places=6,
        null=True,
        blank=True,
        help_text="empty: no limit, spend is tracked",
    )
    soft_limit_percent = models.PositiveSmallIntegerField(default=80)
    reserved_cents = models.DecimalField(max_digits=20, decimal_places=6, default=ZERO)
    spent_cents = models.DecimalField(max_digits=20, decimal_places=6, default=ZERO)
    soft_alerted_at = models.DateTimeField(null=True, blank=True)
    refused_calls = models.PositiveIntegerField(default=0)
    last_refused_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-month", "scope"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "month"],
                condition=Q(scope="workflow"),
                name="one_workflow_budget_per_month",
            ),
            models.UniqueConstraint(
                fields=["agent", "month"],
                condition=Q(scope="agent"),
                name="one_agent_budget_per_month",
            ),
            models.CheckConstraint(
                condition=(Q(scope="workflow", workflow__isnull=False, agent__isnull=True))
                | Q(scope="agent", agent__isnull=False, workflow__isnull=True),
                name="budget_period_names_its_owner",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def owner_slug(self) -> str:
        owner = self.workflow if self.scope == self.Scope.WORKFLOW else self.agent
        return owner.slug if owner is not None else "?"

    @property
    def name(self) -> str:
        return f"{self.scope} {self.owner_slug} {self.month:%Y-%m}"

    @property
    def remaining_cents(self) -> Decimal | None:
        if self.limit_cents is None:
            return None
        return self.limit_cents - self.spent_cents - self.reserved_cents

    @property
    def used_percent(self) -> Decimal | None:
        if not self.limit_cents:
            return None
        return (self.spent_cents + self.reserved_cents) * 100 / self.limit_cents


class BudgetReservation(models.Model):
    """The expected cost of one model call, held against its budgets until the call ends."""

    class State(models.TextChoices):
        HELD = "held"
        SETTLED = "settled"
        RELEASED = "released"

    created_at = models.DateTimeField(default=timezone.now)
    state = models.CharField(max_length=8, choices=State.choices, default=State.HELD)
    amount_cents = models.DecimalField(max_digits=20, decimal_places=6)
    actual_cents = models.DecimalField(max_digits=20, decimal_places=6, null=True, blank=True)
    periods = models.ManyToManyField(BudgetPeriod, related_name="reservations")
    model_call = models.OneToOneField(
        ModelCall, on_delete=models.SET_NULL, null=True, blank=True, related_name="reservation"
    )
    settled_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return f"reservation {self.pk}: {self.amount_cents} ({self.state})"


class ProviderCircuit(Circuit):
    """The circuit breaker of one model provider (see apps/core/breaker.py), shared by every
    worker."""

    provider = models.CharField(max_length=40, unique=True)

    def __str__(self) -> str:
        return f"{self.provider}: {self.state}"


class DemoTraffic(models.Model):
    """The demo agents' switch and their position in the demo script (one row)."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON)
    paused = models.BooleanField(default=False)
    paused_by = models.CharField(max_length=150, blank=True)
    counter = models.PositiveIntegerField(default=0)
    last_tick_at = models.DateTimeField(null=True, blank=True)

    def __str__(self) -> str:
        return "demo traffic " + ("paused" if self.paused else "on")
