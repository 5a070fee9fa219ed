"""Who and what can act: workflows, agents and their keys, tools, model prices."""

from __future__ import annotations

import secrets
from decimal import Decimal

from django.conf import settings
from django.core.validators import MinValueValidator, RegexValidator
from django.db import models

slug_validator = RegexValidator(
    r"^[a-z0-9][a-z0-9_-]{0,62}$",
    "use lower-case letters, digits, '-' and '_' (at most 63), starting with a letter or digit",
)


class RiskZone(models.TextChoices):
    GREEN = "green", "green: runs on its own"
    YELLOW = "yellow", "yellow: runs, spot-checked after"
    RED = "red", "red: two people approve"


def callback_secret_new() -> str:
    return secrets.token_hex(32)


class Workflow(models.Model):
    """A business process handed partly to agents ("refund requests")."""

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Tool(models.Model):
    """Something an agent can make happen in a system of record."""

    class Connector(models.TextChoices):
        HTTP = "http", "HTTP endpoint"
        CALLABLE = "callable", "in-process callable"

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    description = models.TextField(blank=True)
    input_schema = models.JSONField(
        default=dict, help_text="JSON Schema (draft 2020-12) of the params an action must carry"
    )
    amount_param = models.CharField(
        max_length=63,
        blank=True,
        help_text="the param holding the amount in minor units (cents), for amount caps",
    )
    connector = models.CharField(max_length=10, choices=Connector.choices, default=Connector.HTTP)
    endpoint_url = models.CharField(max_length=500, blank=True, help_text="for HTTP connectors")
    callable_path = models.CharField(
        max_length=200, blank=True, help_text="dotted path, for in-process connectors"
    )
    credential_secret = models.CharField(
        max_length=500,
        blank=True,
        help_text=(
            "the credential the system of record issued for this tool, sent as "
            "`Authorization: Bearer <credential>` with every HTTP call and undo; empty: none. "
            "Never shown, logged or written to the audit trail"
        ),
    )
    timeout_seconds = models.FloatField(default=10.0, validators=[MinValueValidator(0.1)])
    max_retries = models.PositiveSmallIntegerField(default=3)
    breaker_failure_threshold = models.PositiveSmallIntegerField(
        default=5, help_text="consecutive failures that open the circuit"
    )
    breaker_cooldown_seconds = models.PositiveIntegerField(
        default=60, help_text="how long an open circuit waits before one probe"
    )
    reversible = models.BooleanField(default=False)
    undo_endpoint_url = models.CharField(max_length=500, blank=True)
    undo_callable_path = models.CharField(max_length=200, blank=True)
    supports_idempotency = models.BooleanField(
        default=True, help_text="the system of record honours an Idempotency-Key"
    )
    risk_zone = models.CharField(max_length=6, choices=RiskZone.choices, default=RiskZone.YELLOW)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class Agent(models.Model):
    """A registered identity that proposes actions."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        PAUSED = "paused"
        QUARANTINED = "quarantined"

    class RiskTier(models.TextChoices):
        LOW = "low"
        MEDIUM = "medium"
        HIGH = "high"

    slug = models.CharField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=120)
    owner = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="owned_agents"
    )
    workflows = models.ManyToManyField(Workflow, related_name="agents", blank=True)
    tools = models.ManyToManyField(
        Tool, related_name="agents", blank=True, help_text="least capability: only these"
    )
    risk_tier = models.CharField(max_length=6, choices=RiskTier.choices, default=RiskTier.MEDIUM)
    status = models.CharField(max_length=12, choices=Status.choices, default=Status.ACTIVE)
    callback_url = models.URLField(
        blank=True,
        max_length=500,
        help_text="called with each action's outcome once a person or a worker has settled it",
    )
    callback_secret = models.CharField(
        max_length=64,
        default=callback_secret_new,
        help_text="signs the callbacks (HMAC-SHA256); the agent checks the signature with it",
    )
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class AgentKey(models.Model):
    """An API key of an agent. Only a SHA-256 digest of the key is stored; the key itself is
    shown once, when it is made. Keys carry 256 bits of randomness, so a fast hash is enough:
    nothing is gained by a slow password hash against brute force of such a space."""

    agent = models.ForeignKey(Agent, on_delete=models.CASCADE, related_name="keys")
    prefix = models.CharField(max_length=12, unique=True, help_text="public part, for lookup")
    digest = models.CharField(max_length=64)
    label = models.CharField(max_length=120, blank=True)
    workflows = models.ManyToManyField(
        Workflow, related_name="+", blank=True, help_text="empty: all of the agent's workflows"
    )
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    last_used_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.agent.slug}:{self.prefix}"


class ModelPrice(models.Model):
    provider = models.CharField(max_length=40)
    model = models.CharField(max_length=120)
    input_per_1k = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(Decimal(0))]
    )
    output_per_1k = models.DecimalField(
        max_digits=12, decimal_places=6, validators=[MinValueValidator(Decimal(0))]
    )
    currency = models.CharField(max_length=3, default="USD")

    class Meta:
        ordering = ["provider", "model"]
        constraints = [
            models.UniqueConstraint(fields=["provider", "model"], name="one_price_per_model")
        ]

    def __str__(self) -> str:
        return f"{self.provider}/{self.model}"


class RegistryGeneration(models.Model):
    """One row whose value moves (to a new number from a database sequence, never reused, even
    by a transaction that rolls back) whenever the agents, their workflows, tools and key scopes,
    or the Decision Books' versions change: triggers on those tables move it. The gate keeps what
    it reads of them between requests and reads this value to know when to read them again."""

    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"registry generation {self.value}"
