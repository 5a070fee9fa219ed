"""The ledger's own records: the daily cost rollup and the action tally behind the Autonomy
Balance Sheet, the backtests of Decision Book drafts, and the SLO alerts raised for on-call.

Money is Decimal minor units (cents) with six decimal places, as the cost events it sums
(runtime.ModelCall): the rollup must add up to exactly what the raw records add up to."""

from __future__ import annotations

import uuid
from decimal import Decimal

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.books.models import BookVersion
from apps.registry.models import Workflow

ZERO = Decimal(0)


class CostRollup(models.Model):
    """The cost events (model calls) of one workflow on one local day, summed.

    Written only by `rollups.cost_rollup`, which recomputes whole days from the raw records;
    see there for how it stays exact."""

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    day = models.DateField()
    calls = models.PositiveIntegerField()
    cost_cents = models.DecimalField(max_digits=20, decimal_places=6)

    class Meta:
        ordering = ["day", "workflow"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "day"], name="one_cost_rollup_per_day")
        ]
        indexes = [models.Index(fields=["day", "workflow"], name="ledger_rollup_by_day")]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.day}: {self.cost_cents}"


class RollupMark(models.Model):
    """How far the rollup goes (one row): days before `rolled_until` are read from
    CostRollup, that day and later from the raw records."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON)
    rolled_until = models.DateField(null=True, blank=True)
    updated_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"cost rollup until {self.rolled_until}"


class ActionTally(models.Model):
    """How many actions of one workflow, created in one quarter hour, are in one state: a
    running count kept by the database itself (see `apps/ledger/tallies.py`).

    Rows are deltas (+1 when an action enters a state, -1 when it leaves it) appended by a
    trigger on the actions table, and folded into one row per key by `tally_compact`. The sum of
    `n` over any set of keys is always the live count. No foreign keys: the trigger must never
    lock the rows it refers to."""

    workflow_id = models.BigIntegerField()
    bucket = models.DateTimeField(help_text="the action's creation time, floored to 15 minutes")
    book_version_id = models.BigIntegerField(null=True)
    decision = models.CharField(max_length=8)
    status = models.CharField(max_length=16)
    n = models.IntegerField()
    compacted = models.BooleanField(default=False)

    class Meta:
        indexes = [
            models.Index(fields=["workflow_id", "bucket"], name="ledger_tally_by_bucket"),
            models.Index(
                fields=["workflow_id", "bucket"],
                condition=Q(compacted=False),
                name="ledger_tally_fresh",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow_id} {self.bucket} {self.decision}/{self.status}: {self.n:+d}"


class Backtest(models.Model):
    """A draft Decision Book decided against the last N recorded actions of its workflow,
    beside the version that was active when it was asked for."""

    class State(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    draft = models.ForeignKey(BookVersion, on_delete=models.CASCADE, related_name="+")
    active = models.ForeignKey(
        BookVersion, on_delete=models.CASCADE, null=True, blank=True, related_name="+"
    )
    requested_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    limit = models.PositiveIntegerField(help_text="how many recent actions to decide again")
    state = models.CharField(max_length=8, choices=State.choices, default=State.QUEUED)
    total = models.PositiveIntegerField(default=0)
    done = models.PositiveIntegerField(default=0)
    parts = models.PositiveIntegerField(default=0)
    parts_done = models.PositiveIntegerField(default=0)
    error = models.TextField(blank=True)
    result = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["draft", "created_at"], name="ledger_backtest_by_draft")]

    def __str__(self) -> str:
        return f"backtest {self.pk} of {self.workflow_id} ({self.state})"

    @property
    def percent(self) -> int:
        if self.state == self.State.DONE:
            return 100
        return int(self.done * 100 / self.total) if self.total else 0

    @property
    def finished(self) -> bool:
        return self.state in (self.State.DONE, self.State.FAILED)


class BacktestPart(models.Model):
    """A share of a running backtest's actions, decided by one task: the actions from the one
    at `first_at`/`first_id` (the newest, included) down to the one at `stop_at`/`stop_id` (the
    newest of the next part, excluded). `outcome` is written once, when the part is decided;
    the parts are deleted once merged into the backtest's result."""

    backtest = models.ForeignKey(Backtest, on_delete=models.CASCADE, related_name="+")
    index = models.PositiveIntegerField()
    size = models.PositiveIntegerField()
    first_at = models.DateTimeField()
    first_id = models.UUIDField()
    stop_at = models.DateTimeField(null=True)
    stop_id = models.UUIDField(null=True)
    outcome = models.JSONField(null=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["backtest", "index"], name="one_backtest_part_each")
        ]

    def __str__(self) -> str:
        return f"part {self.index} of backtest {self.backtest_id}"


class SloAlert(models.Model):
    """A breach of a workflow's SLO, or a week-on-week regression of one of its rates.

    At most one alert per workflow, SLO and kind is open at a time (the database refuses a
    second), so checking again, however often, raises nothing new until it is resolved."""

    class Kind(models.TextChoices):
        BREACH = "breach"
        REGRESSION = "regression"

    class State(models.TextChoices):
        OPEN = "open"
        RESOLVED = "resolved"

    workflow = models.ForeignKey(Workflow, on_delete=models.CASCADE, related_name="+")
    slo = models.CharField(max_length=32)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    state = models.CharField(max_length=8, choices=State.choices, default=State.OPEN)
    value = models.FloatField(help_text="the measured value when the alert was raised")
    target = models.FloatField(help_text="the target, or for a regression last week's value")
    window_start = models.DateTimeField()
    window_end = models.DateTimeField()
    message = models.CharField(max_length=300)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["workflow", "slo", "kind"],
                condition=Q(state="open"),
                name="one_open_slo_alert",
            )
        ]

    def __str__(self) -> str:
        return f"{self.kind} of {self.slo} in {self.workflow_id} ({self.state})"
