"""Actions: one proposed use of a tool by an agent, from proposal to its end (and undo)."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone

from apps.books.models import BookVersion
from apps.core.models import Circuit
from apps.registry.models import Agent, AgentKey, Tool, Workflow


class Status(models.TextChoices):
    PROPOSED = "proposed"
    DENIED = "denied"
    OBSERVED = "observed"
    BLOCKED = "blocked"
    PENDING_REVIEW = "pending_review"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


class Decision(models.TextChoices):
    ALLOW = "allow"
    HOLD = "hold"
    DENY = "deny"
    OBSERVE = "observe"


class Action(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    agent = models.ForeignKey(Agent, on_delete=models.PROTECT, related_name="actions")
    key = models.ForeignKey(AgentKey, on_delete=models.SET_NULL, null=True, related_name="+")
    # Indexed by (workflow, created_at, id) below, which also serves lookups by workflow alone.
    workflow = models.ForeignKey(
        Workflow, on_delete=models.PROTECT, related_name="actions", db_index=False
    )
    tool = models.ForeignKey(Tool, on_delete=models.PROTECT, related_name="actions")
    book_version = models.ForeignKey(
        BookVersion, on_delete=models.PROTECT, null=True, blank=True, related_name="actions"
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PROPOSED)
    decision = models.CharField(max_length=8, choices=Decision.choices)
    reasons = models.JSONField(default=list)
    spot_check = models.BooleanField(default=False)

    params = models.JSONField(default=dict)
    subject = models.CharField(max_length=200, blank=True)
    confidence = models.DecimalField(max_digits=5, decimal_places=4, null=True, blank=True)
    reasoning = models.TextField(blank=True)
    evidence = models.JSONField(default=list)
    usage = models.JSONField(default=dict)
    # NULL, not "": only proposals that carry a key are deduplicated by the unique constraint.
    idempotency_key = models.CharField(max_length=200, null=True, blank=True)  # noqa: DJ001
    trace_id = models.CharField(max_length=100, blank=True)
    segment = models.CharField(max_length=63, blank=True, help_text="customer segment, if given")
    # SHA-256 of the params the Decision Book last decided (apps/actions/params.py): set when the
    # gate allows an action and when people approve one; the worker runs nothing else.
    params_digest = models.CharField(max_length=64, blank=True)
    # An action people approved runs only until then: an approval is for the moment it was given.
    approval_expires_at = models.DateTimeField(null=True, blank=True)

    escalated_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escalated_actions",
        help_text="who must look at it: the book's escalation owner, for fallbacks",
    )
    result = models.JSONField(null=True, blank=True)
    error = models.TextField(blank=True)
    attempts = models.PositiveSmallIntegerField(default=0)
    undo_result = models.JSONField(null=True, blank=True)

    # Set by the gate (not auto_now_add) so that an action queued at once is queued at the very
    # moment it was proposed, never before it.
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)
    queued_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)
    rolled_back_at = models.DateTimeField(null=True, blank=True)
    # The execution lease of a running action: the worker that claimed it (or took it over) is
    # its only caller until this time, by the database's clock. apps/actions/execution.py says
    # how long a lease lasts and why.
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    # When the requeue sweep last sent it to the workers again (NULL: never), so that it sends
    # one action at most once per ACTION_REQUEUE_AFTER_SECONDS.
    resent_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        constraints = [
            models.UniqueConstraint(
                fields=["agent", "idempotency_key"],
                condition=Q(idempotency_key__isnull=False),
                name="one_action_per_agent_idempotency_key",
            )
        ]
        indexes = [
            models.Index(fields=["workflow", "status", "created_at"]),
            # A workflow's actions newest first, in a stable order (backtests read them in parts).
            models.Index(fields=["workflow", "created_at", "id"], name="actions_by_workflow_time"),
            models.Index(fields=["subject", "created_at"]),
            models.Index(fields=["tool", "status"]),
        ]

    def __str__(self) -> str:
        return f"{self.tool_id}:{self.id} ({self.status})"

    @property
    def escalation_owner_id(self) -> int | None:
        """Who gets the action when no one else can take it (it failed, was drained, or its
        tool's circuit is open): the escalation owner named by the book version it was decided
        under; nobody in particular (the whole queue) without one."""
        version = self.book_version if self.book_version_id else None
        return version.escalation_owner_id if version is not None else None

    @property
    def downstream_key(self) -> str:
        """The Idempotency-Key sent to the system of record: one per action, so a redelivered
        or retried execution can never cause a second effect."""
        return f"esc-{self.id}"


class ToolCircuit(Circuit):
    """The circuit breaker of one tool (see apps/core/breaker.py): after the tool's
    breaker_failure_threshold consecutive failures its calls are refused until
    breaker_cooldown_seconds have passed."""

    tool = models.OneToOneField(Tool, on_delete=models.CASCADE, related_name="circuit")

    def __str__(self) -> str:
        return f"{self.tool_id}: {self.state}"


class CallbackDelivery(models.Model):
    """One outcome reported to an agent's callback URL, with every attempt's result."""

    action = models.ForeignKey(Action, on_delete=models.CASCADE, related_name="callbacks")
    status = models.CharField(max_length=16, help_text="the action status being reported")
    url = models.URLField(max_length=500)
    attempts = models.PositiveSmallIntegerField(default=0)
    delivered_at = models.DateTimeField(null=True, blank=True)
    response_status = models.PositiveSmallIntegerField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at"]

    def __str__(self) -> str:
        return f"callback {self.status} of {self.action_id}"
