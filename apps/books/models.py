"""Decision Books: the versioned rules of one workflow."""

from __future__ import annotations

from decimal import Decimal

from django.conf import settings
from django.core.validators import MaxValueValidator, MinValueValidator
from django.db import models
from django.db.models import Q

from apps.registry.models import Workflow


class AutonomyMode(models.TextChoices):
    OBSERVE = "observe", "observe: decide and log, never act"
    ASSIST = "assist", "assist: every allowed action waits for a person"
    CONSTRAINED = "constrained", "constrained: the policy decides allow, hold or deny"
    AUTONOMOUS = "autonomous", "autonomous: as constrained; yellow zone spot-checked after"


class BookVersion(models.Model):
    """One version of a workflow's Decision Book.

    A draft is edited; publishing gives it the next number and makes it the one active version
    (the previous one becomes superseded). A published or superseded version never changes: the
    database refuses it (see the migration's trigger), and the services and forms refuse first.
    """

    class Status(models.TextChoices):
        DRAFT = "draft"
        PUBLISHED = "published"
        SUPERSEDED = "superseded"

    workflow = models.ForeignKey(Workflow, on_delete=models.PROTECT, related_name="book_versions")
    number = models.PositiveIntegerField(null=True, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT)

    objective = models.TextField(blank=True)
    data_sources = models.JSONField(default=list, blank=True)
    tools = models.JSONField(default=list, blank=True)
    confidence_threshold = models.DecimalField(
        max_digits=5,
        decimal_places=4,
        default=Decimal("0.8"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))],
    )
    allowed_segments = models.JSONField(default=list, blank=True)
    business_hours_start = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(23)]
    )
    business_hours_end = models.PositiveSmallIntegerField(
        null=True, blank=True, validators=[MaxValueValidator(24)]
    )
    weekdays_only = models.BooleanField(default=False)
    raw_policies = models.TextField(blank=True)
    policy_text = models.TextField(blank=True, help_text="the full Cedar policy set, compiled")
    cedar_schema = models.TextField(blank=True, help_text="the Cedar schema the policies obey")
    spot_check_rate = models.DecimalField(
        max_digits=4,
        decimal_places=3,
        default=Decimal("0.1"),
        validators=[MinValueValidator(Decimal(0)), MaxValueValidator(Decimal(1))],
    )
    red_two_approvers = models.BooleanField(default=True)
    sla_minutes = models.PositiveIntegerField(default=60, validators=[MinValueValidator(1)])
    slos = models.JSONField(default=dict, blank=True)
    per_outcome_cap_cents = models.PositiveIntegerField(null=True, blank=True)
    monthly_budget_cents = models.PositiveBigIntegerField(null=True, blank=True)
    currency = models.CharField(max_length=3, default="EUR")
    escalation_owner = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        on_delete=models.PROTECT,
        null=True,
        blank=True,
        related_name="escalations",
    )
    autonomy_mode = models.CharField(
        max_length=12, choices=AutonomyMode.choices, default=AutonomyMode.CONSTRAINED
    )
    model_policy = models.JSONField(default=dict, blank=True)
    baseline_minutes = models.DecimalField(
        max_digits=7, decimal_places=2, default=Decimal(5), validators=[MinValueValidator(0)]
    )

    change_note = models.TextField(blank=True)
    based_on = models.ForeignKey(
        "self", on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    created_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    published_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, null=True, blank=True, related_name="+"
    )
    published_at = models.DateTimeField(null=True, blank=True)
    superseded_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["workflow", "-number"]
        constraints = [
            models.UniqueConstraint(fields=["workflow", "number"], name="one_number_per_version"),
            models.UniqueConstraint(
                fields=["workflow"],
                condition=Q(status="published"),
                name="one_active_version_per_workflow",
            ),
            models.UniqueConstraint(
                fields=["workflow"], condition=Q(status="draft"), name="one_draft_per_workflow"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.workflow.slug} {self.label}"

    @property
    def label(self) -> str:
        return f"v{self.number}" if self.number else "draft"

    @property
    def is_draft(self) -> bool:
        return self.status == self.Status.DRAFT


# The columns a published version may still change: only its retirement.
MUTABLE_AFTER_PUBLISH = ("status", "superseded_at")
