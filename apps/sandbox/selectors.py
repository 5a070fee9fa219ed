"""Reading the sandbox: what tests (and the worker's tests) assert against."""

from __future__ import annotations

from django.db.models import QuerySet

from apps.sandbox.models import (
    AccessGrant,
    InvoiceEvent,
    MfaReset,
    Order,
    Refund,
    SandboxFaults,
)


def order_find(order_id: str) -> Order | None:
    return Order.objects.filter(pk=order_id).first()


def refunds_for(order_id: str) -> QuerySet[Refund]:
    """The refunds of an order, oldest first, reversed ones included."""
    return Refund.objects.filter(order_id=order_id).order_by("created_at", "id")


def effect_count(idempotency_key: str) -> int:
    """How many effects requests with this key have had on the sandbox: refunds issued and
    reversed, invoice changes, grants made and revoked, MFA resets. One request makes at most
    one effect, so anything above 1 for one endpoint means a duplicate got through."""
    return (
        Refund.objects.filter(idempotency_key=idempotency_key).count()
        + Refund.objects.filter(reversed_by_key=idempotency_key).count()
        + InvoiceEvent.objects.filter(idempotency_key=idempotency_key).count()
        + AccessGrant.objects.filter(idempotency_key=idempotency_key).count()
        + AccessGrant.objects.filter(revoked_by_key=idempotency_key).count()
        + MfaReset.objects.filter(idempotency_key=idempotency_key).count()
    )


def faults_current() -> SandboxFaults:
    """The faults switch as it stands (an unsaved healthy one when it was never set)."""
    return SandboxFaults.objects.filter(pk=SandboxFaults.SINGLETON).first() or SandboxFaults()
