"""Kill switches (a stop at one scope: everything, a workflow, an agent or a tool), and the
records of what on-call did under them: drains and rollbacks."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.db.models import Q


class Scope(models.TextChoices):
    GLOBAL = "global"
    WORKFLOW = "workflow"
    AGENT = "agent"
    TOOL = "tool"


class KillSwitch(models.Model):
    """One engagement of a switch, from engaged to released. While `released_at` is empty it
    covers every action in its scope: the gate records new proposals there as blocked, and no
    queued action in it starts running.

    `engaged_at` and `released_at` are read from the database's clock, the same clock that
    stamps an action's `started_at` when a worker claims it, so the proof compares like with
    like whichever host engaged the switch or ran the action."""

    class Kind(models.TextChoices):
        MANUAL = "manual", "engaged by on-call"
        QUARANTINE = "quarantine", "quarantine by the behavioural firewall"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    target = models.CharField(max_length=63, blank=True, help_text="slug; empty for global")
    kind = models.CharField(max_length=10, choices=Kind.choices, default=Kind.MANUAL)
    reason = models.TextField()
    evidence = models.JSONField(
        default=dict, blank=True, help_text="for a quarantine: what the firewall counted"
    )
    engaged_by = models.CharField(max_length=150)
    engaged_via = models.CharField(
        max_length=12, blank=True, help_text="console, api, command or firewall"
    )
    engaged_at = models.DateTimeField()
    released_by = models.CharField(max_length=150, blank=True)
    released_at = models.DateTimeField(null=True, blank=True)
    release_reason = models.TextField(blank=True)

    class Meta:
        ordering = ["-engaged_at"]
        indexes = [models.Index(fields=["released_at", "scope", "target"])]
        constraints = [
            models.CheckConstraint(
                condition=Q(scope="global", target="") | (~Q(scope="global") & ~Q(target="")),
                name="killswitch_target_matches_scope",
            )
        ]

    def __str__(self) -> str:
        return f"{self.where} ({'engaged' if self.released_at is None else 'released'})"

    @property
    def engaged(self) -> bool:
        return self.released_at is None

    @property
    def where(self) -> str:
        """`global`, or `agent: refund-bot`."""
        return self.scope if self.scope == Scope.GLOBAL else f"{self.scope}: {self.target}"


class DrainRun(models.Model):
    """One drain: the queued and held work of a scope, cancelled or handed to people, with
    what happened to each action (`report`: [{action, subject, tool, was, outcome, detail}])."""

    class Mode(models.TextChoices):
        CANCEL = "cancel", "cancel it"
        HAND_OVER = "hand_over", "hand it to people"

    scope = models.CharField(max_length=8, choices=Scope.choices)
    target = models.CharField(max_length=63, blank=True)
    mode = models.CharField(max_length=9, choices=Mode.choices)
    reason = models.TextField()
    requested_by = models.CharField(max_length=150)
    created_at = models.DateTimeField()
    finished_at = models.DateTimeField(null=True, blank=True)
    report: models.JSONField[list[dict[str, Any]]] = models.JSONField(default=list, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        where = self.scope if self.scope == Scope.GLOBAL else f"{self.scope}: {self.target}"
        return f"drain {self.pk} of {where} ({self.mode})"

    @property
    def where(self) -> str:
        return self.scope if self.scope == Scope.GLOBAL else f"{self.scope}: {self.target}"


class RollbackRun(models.Model):
    """One "roll back the last N": the actions chosen when it was asked for (`planned`, newest
    first) and, as a worker goes through them, what happened to each (`report`)."""

    class State(models.TextChoices):
        PENDING = "pending"
        RUNNING = "running"
        FINISHED = "finished"

    scope = models.CharField(
        max_length=8, choices=[(Scope.AGENT, "agent"), (Scope.WORKFLOW, "workflow")]
    )
    target = models.CharField(max_length=63)
    count = models.PositiveIntegerField(help_text="how many were asked for")
    reason = models.TextField()
    requested_by = models.CharField(max_length=150)
    state = models.CharField(max_length=8, choices=State.choices, default=State.PENDING)
    planned: models.JSONField[list[str]] = models.JSONField(default=list, blank=True)
    report: models.JSONField[list[dict[str, Any]]] = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField()
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"rollback {self.pk} of {self.scope}: {self.target} ({self.state})"

    @property
    def where(self) -> str:
        return f"{self.scope}: {self.target}"

    @property
    def done(self) -> int:
        return len(self.report)

    @property
    def total(self) -> int:
        return len(self.planned)

    @property
    def percent(self) -> int:
        return 100 if not self.planned else round(100 * self.done / self.total)
