"""Review items: the held actions, spot checks and fallbacks that people decide."""

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.db.models import Q

from apps.actions.models import Action
from apps.registry.models import RiskZone, Workflow


class Kind(models.TextChoices):
    HOLD = "hold", "held for approval"
    SPOT_CHECK = "spot_check", "spot check of an executed action"
    FALLBACK = "fallback", "fallback: the action could not run"


class State(models.TextChoices):
    OPEN = "open"
    DECIDED = "decided"
    EXPIRED = "expired"
    WITHDRAWN = "withdrawn"


class Verdict(models.TextChoices):
    APPROVE = "approve", "approve"
    EDIT_APPROVE = "edit_approve", "edit and approve"
    REJECT = "reject", "reject"


class ReviewItem(models.Model):
    """One thing a person must decide about one action.

    A held action has one item while it waits; an executed yellow-zone action may get a spot
    check; a failed or circuit-broken one becomes a fallback for the escalation owner. The SLA
    deadline comes from the Decision Book that governed the action."""

    action = models.ForeignKey(Action, on_delete=models.PROTECT, related_name="review_items")
    # Copied from the action so that the queue filters and sorts on one table's index.
    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="+")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    zone = models.CharField(max_length=6, choices=RiskZone.choices, default=RiskZone.YELLOW)
    state = models.CharField(max_length=9, choices=State.choices, default=State.OPEN)
    approvals_required = models.PositiveSmallIntegerField(default=1)
    error = models.TextField(blank=True, help_text="for fallbacks: why the action could not run")

    created_at = models.DateTimeField()
    deadline = models.DateTimeField(help_text="the SLA: decided by then, or escalated")
    expires_at = models.DateTimeField(help_text="still undecided by then: expired, never run")
    escalated_at = models.DateTimeField(null=True, blank=True)
    escalated_to = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escalated_reviews",
    )
    claimed_by = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="claimed_reviews",
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=12, choices=Verdict.choices, blank=True)
    retry = models.ForeignKey(
        Action,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="+",
        help_text="for an approved fallback: the new action that runs it again",
    )
    # Params a person edited that still wait for further approvals (a red-zone edit needs a
    # second person): what the next approver approves. NULL: the action's own params.
    pending_params = models.JSONField(null=True, blank=True)

    class Meta:
        ordering = ["deadline"]
        constraints = [
            models.UniqueConstraint(
                fields=["action"], condition=Q(state="open"), name="one_open_review_per_action"
            )
        ]
        indexes = [
            # The queue: open items by deadline, whole or per workflow.
            models.Index(
                fields=["deadline", "id"], condition=Q(state="open"), name="review_open_by_deadline"
            ),
            models.Index(
                fields=["workflow", "deadline", "id"],
                condition=Q(state="open"),
                name="review_open_by_workflow",
            ),
            models.Index(fields=["workflow", "closed_at"], name="review_closed_by_workflow"),
        ]

    def __str__(self) -> str:
        return f"review {self.pk} of {self.action_id} ({self.kind}, {self.state})"

    @property
    def is_open(self) -> bool:
        return self.state == State.OPEN


class ReviewDecision(models.Model):
    """One person's decision on an item, kept as feedback: the context they saw, the
    correction they made and their rationale."""

    item = models.ForeignKey(ReviewItem, on_delete=models.PROTECT, related_name="decisions")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    verdict = models.CharField(max_length=12, choices=Verdict.choices)
    reason_code = models.CharField(max_length=40)
    reason_text = models.TextField(blank=True)
    context = models.JSONField(help_text="what the person saw: the action as proposed")
    params_after = models.JSONField(null=True, blank=True)
    diff = models.JSONField(default=list, blank=True, help_text="[{field, before, after}]")
    # False for the first of two approvals of a red-zone item.
    final = models.BooleanField(default=True)
    created_at = models.DateTimeField()
    # What an approval approved: the digest of the params it let run (apps/actions/params.py),
    # the book version that decided them, and until when it holds. An edit changes the digest,
    # so approvals of other params no longer count.
    params_digest = models.CharField(max_length=64, blank=True)
    book_version = models.ForeignKey(
        "books.BookVersion", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at"]
        constraints = [
            # One decision per person and params: whoever approved other params may approve
            # the edited ones, as a person who has now seen them.
            models.UniqueConstraint(
                fields=["item", "user", "params_digest"], name="one_decision_per_person_and_params"
            )
        ]
        indexes = [models.Index(fields=["created_at"])]

    def __str__(self) -> str:
        return f"{self.verdict} by {self.user_id} on {self.item_id}"


class QueueTally(models.Model):
    """How many items are open in a workflow's queue, kept exact by the transactions that open
    and close items, so that the queue page never counts 100,000 rows to show one number."""

    workflow = models.OneToOneField(Workflow, on_delete=models.CASCADE, related_name="+")
    open = models.PositiveIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.workflow_id}: {self.open} open"
