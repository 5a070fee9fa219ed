"""Refunds against orders: issue one, and reverse one (the undo)."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from apps.sandbox.models import Order, Refund
from apps.sandbox.params import SandboxError


def _order_status(order: Order) -> str:
    if order.refunded_cents == 0:
        return Order.Status.PAID
    if order.refunded_cents >= order.total_cents:
        return Order.Status.REFUNDED
    return Order.Status.PARTIALLY_REFUNDED


@transaction.atomic
def refund_issue(
    *,
    order_id: str,
    amount_cents: int,
    currency: str,
    reason: str,
    idempotency_key: str,
    action_ref: str = "",
) -> Refund:
    """Pay part or all of an order back; the order's refundable balance shrinks by as much."""
    # Locking the order serialises refunds of one order, so two at once cannot both fit.
    order = Order.objects.select_for_update().filter(pk=order_id).first()
    if order is None:
        raise SandboxError(404, f"there is no order {order_id!r}", "order_id")
    if currency != order.currency:
        raise SandboxError(
            422,
            f"{currency} does not match the currency of order {order.pk} ({order.currency})",
            "currency",
        )
    if amount_cents > order.refundable_cents:
        raise SandboxError(
            422,
            f"{amount_cents} exceeds the refundable balance of order {order.pk} "
            f"({order.refundable_cents} of {order.total_cents} {order.currency})",
            "amount_cents",
        )
    order.refunded_cents += amount_cents
    order.status = _order_status(order)
    order.save(update_fields=["refunded_cents", "status"])
    return Refund.objects.create(
        order=order,
        amount_cents=amount_cents,
        currency=currency,
        reason=reason,
        idempotency_key=idempotency_key,
        action_ref=action_ref,
    )


@transaction.atomic
def refund_undo(
    *,
    original_key: str | None = None,
    refund_id: str | None = None,
    idempotency_key: str,
) -> tuple[Refund, bool]:
    """Reverse a refund, named by the key that issued it or by its id (or both, if they agree):
    the amount goes back into the order's refundable balance. Returns the refund and whether
    this call changed anything (reversing a reversed refund changes nothing)."""
    if original_key is not None:
        found = Refund.objects.filter(idempotency_key=original_key).values("pk", "order_id").first()
        if found is None:
            raise SandboxError(
                404,
                f"no refund was issued with key {original_key!r}",
                "idempotency_key_of_original",
            )
        if refund_id is not None and refund_id != found["pk"]:
            raise SandboxError(
                422,
                f"{refund_id!r} is not the refund issued with key {original_key!r}",
                "refund_id",
            )
    else:
        found = Refund.objects.filter(pk=refund_id).values("pk", "order_id").first()
        if found is None:
            raise SandboxError(404, f"there is no refund {refund_id!r}", "refund_id")
    # Order first, then refund: the same order as refund_issue takes its locks in.
    order = Order.objects.select_for_update().get(pk=found["order_id"])
    refund = Refund.objects.select_for_update().get(pk=found["pk"])
    refund.order = order
    if refund.status == Refund.Status.REVERSED:
        return refund, False
    order.refunded_cents -= refund.amount_cents
    order.status = _order_status(order)
    order.save(update_fields=["refunded_cents", "status"])
    refund.status = Refund.Status.REVERSED
    refund.reversed_at = timezone.now()
    refund.reversed_by_key = idempotency_key
    refund.save(update_fields=["status", "reversed_at", "reversed_by_key"])
    return refund, True
