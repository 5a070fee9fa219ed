"""The sandbox's tables: what a small shop's back office would keep, plus the idempotency keys it
has answered and the switch that makes it misbehave on purpose.

Every row an endpoint creates carries the Idempotency-Key of the request that created it (and a
reversal the key of the request that reversed it), so a test can count effects per key."""

from __future__ import annotations

import secrets

from django.db import models


def _id(prefix: str) -> str:
    return f"{prefix}_{secrets.token_hex(8)}"


def refund_id() -> str:
    return _id("rf")


def grant_id() -> str:
    return _id("gr")


def mfa_reset_id() -> str:
    return _id("mfa")


class FaultMode(models.TextChoices):
    HEALTHY = "healthy", "healthy: answers normally"
    SLOW = "slow", "slow: waits delay_ms before answering"
    FAILING = "failing", "failing: answers 503 and does nothing"
    FLAKY = "flaky", "flaky: every other request answers 503"


class SandboxFaults(models.Model):
    """The one row (pk 1) that makes the sandbox misbehave on purpose, for demos and tests.

    No row means healthy: reading the switch never writes."""

    SINGLETON = 1

    id = models.PositiveSmallIntegerField(primary_key=True, default=SINGLETON)
    mode = models.CharField(max_length=10, choices=FaultMode.choices, default=FaultMode.HEALTHY)
    delay_ms = models.PositiveIntegerField(default=0)
    # Requests seen since the mode was last set; in flaky mode the odd-numbered ones fail.
    calls = models.PositiveBigIntegerField(default=0)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "sandbox faults"
        constraints = [
            models.CheckConstraint(condition=models.Q(id=1), name="sandbox_faults_singleton"),
        ]

    def __str__(self) -> str:
        return f"{self.mode} ({self.delay_ms} ms)"


class IdempotencyRecord(models.Model):
    """One Idempotency-Key an endpoint has answered, with the digest of the params it came with
    and the answer given, replayed as is when the same request comes again."""

    endpoint = models.CharField(max_length=40)
    key = models.CharField(max_length=255)
    digest = models.CharField(max_length=64, help_text="SHA-256 of the canonical JSON params")
    action_ref = models.CharField(max_length=100, blank=True, help_text="X-Escapement-Action")
    status = models.PositiveSmallIntegerField(null=True)
    response = models.JSONField(null=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # Keys are scoped per endpoint, so an undo may reuse its original's key.
            models.UniqueConstraint(fields=["endpoint", "key"], name="sandbox_idempotency_key"),
        ]

    def __str__(self) -> str:
        return f"{self.endpoint} {self.key}"


class Segment(models.TextChoices):
    RETAIL = "retail"
    SMB = "smb"
    VIP = "vip"


class Order(models.Model):
    class Status(models.TextChoices):
        PAID = "paid"
        PARTIALLY_REFUNDED = "partially_refunded"
        REFUNDED = "refunded"

    id = models.CharField(primary_key=True, max_length=20)
    customer = models.CharField(max_length=120)
    segment = models.CharField(max_length=10, choices=Segment.choices, default=Segment.RETAIL)
    currency = models.CharField(max_length=3)
    total_cents = models.PositiveBigIntegerField()
    refunded_cents = models.PositiveBigIntegerField(default=0)
    status = models.CharField(max_length=20, choices=Status.choices, default=Status.PAID)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["id"]
        constraints = [
            # The last line of defence against paying a customer back more than they paid.
            models.CheckConstraint(
                condition=models.Q(refunded_cents__lte=models.F("total_cents")),
                name="sandbox_order_refunds_within_total",
            ),
        ]

    def __str__(self) -> str:
        return f"order {self.id}"

    @property
    def refundable_cents(self) -> int:
        return self.total_cents - self.refunded_cents


class Refund(models.Model):
    class Status(models.TextChoices):
        ISSUED = "issued"
        REVERSED = "reversed"

    id = models.CharField(primary_key=True, max_length=24, default=refund_id)
    order = models.ForeignKey(Order, on_delete=models.PROTECT, related_name="refunds")
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    reason = models.CharField(max_length=500, blank=True)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ISSUED)
    idempotency_key = models.CharField(max_length=255, unique=True)
    action_ref = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    reversed_at = models.DateTimeField(null=True, blank=True)
    reversed_by_key = models.CharField(max_length=255, blank=True, db_index=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"refund {self.id} of {self.amount_cents} {self.currency} on order {self.order_id}"


class Invoice(models.Model):
    class Status(models.TextChoices):
        OPEN = "open"
        MATCHED = "matched"
        FLAGGED = "flagged"

    id = models.CharField(primary_key=True, max_length=20)
    supplier = models.CharField(max_length=120)
    po_number = models.CharField(max_length=30)
    amount_cents = models.PositiveBigIntegerField()
    currency = models.CharField(max_length=3)
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.OPEN)
    note = models.CharField(max_length=1000, blank=True, help_text="the hold note while flagged")
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"invoice {self.id}"


class InvoiceEvent(models.Model):
    """One change to an invoice (the invoices' journal). A match or a flag remembers whether it
    was undone, so undoing it again changes nothing."""

    class Kind(models.TextChoices):
        MATCHED = "matched"
        UNMATCHED = "unmatched"
        FLAGGED = "flagged"
        UNFLAGGED = "unflagged"

    invoice = models.ForeignKey(Invoice, on_delete=models.PROTECT, related_name="events")
    kind = models.CharField(max_length=10, choices=Kind.choices)
    previous_status = models.CharField(max_length=10, choices=Invoice.Status.choices)
    note = models.CharField(max_length=1000, blank=True)
    idempotency_key = models.CharField(max_length=255, db_index=True)
    action_ref = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    undone_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            models.UniqueConstraint(
                fields=["kind", "idempotency_key"], name="sandbox_invoice_event_key"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.invoice_id} {self.kind}"


class Employee(models.Model):
    id = models.CharField(primary_key=True, max_length=20)
    name = models.CharField(max_length=120)
    department = models.CharField(max_length=60)
    active = models.BooleanField(default=True, help_text="false once the person has left")
    mfa_enrolled = models.BooleanField(default=True)

    class Meta:
        ordering = ["id"]

    def __str__(self) -> str:
        return f"{self.id} {self.name}"


class AccessRole(models.TextChoices):
    VIEWER = "viewer"
    EDITOR = "editor"
    ADMIN = "admin"


class AccessGrant(models.Model):
    id = models.CharField(primary_key=True, max_length=24, default=grant_id)
    employee = models.ForeignKey(Employee, on_delete=models.PROTECT, related_name="grants")
    system = models.CharField(max_length=40)
    role = models.CharField(max_length=10, choices=AccessRole.choices)
    granted_at = models.DateTimeField()
    expires_at = models.DateTimeField()
    idempotency_key = models.CharField(max_length=255, unique=True)
    action_ref = models.CharField(max_length=100, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    revoked_by_key = models.CharField(max_length=255, blank=True, db_index=True)

    class Meta:
        ordering = ["granted_at", "id"]

    def __str__(self) -> str:
        return f"{self.employee_id} {self.role} on {self.system}"


class MfaReset(models.Model):
    """An MFA reset: the old second factor is gone for good, so there is nothing to undo."""

    id = models.CharField(primary_key=True, max_length=24, default=mfa_reset_id)
    employee = models.ForeignKey(Employee, on_delete=models.PROTECT, related_name="mfa_resets")
    idempotency_key = models.CharField(max_length=255, unique=True)
    action_ref = models.CharField(max_length=100, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["created_at", "id"]

    def __str__(self) -> str:
        return f"MFA reset of {self.employee_id}"
