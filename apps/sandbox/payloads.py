"""Rows as the JSON the sandbox answers with (the "result" of a successful response)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from apps.sandbox.models import AccessGrant, Invoice, MfaReset, Order, Refund


def _when(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def order_data(order: Order) -> dict[str, Any]:
    return {
        "order_id": order.pk,
        "customer": order.customer,
        "segment": order.segment,
        "currency": order.currency,
        "total_cents": order.total_cents,
        "refunded_cents": order.refunded_cents,
        "refundable_cents": order.refundable_cents,
        "status": order.status,
    }


def refund_data(refund: Refund) -> dict[str, Any]:
    return {
        "refund_id": refund.pk,
        "order_id": refund.order_id,
        "amount_cents": refund.amount_cents,
        "currency": refund.currency,
        "reason": refund.reason,
        "status": refund.status,
        "created_at": _when(refund.created_at),
        "reversed_at": _when(refund.reversed_at),
    }


def invoice_data(invoice: Invoice) -> dict[str, Any]:
    return {
        "invoice_id": invoice.pk,
        "supplier": invoice.supplier,
        "po_number": invoice.po_number,
        "amount_cents": invoice.amount_cents,
        "currency": invoice.currency,
        "status": invoice.status,
        "note": invoice.note,
    }


def grant_data(grant: AccessGrant) -> dict[str, Any]:
    return {
        "grant_id": grant.pk,
        "employee_id": grant.employee_id,
        "system": grant.system,
        "role": grant.role,
        "status": "revoked" if grant.revoked_at else "active",
        "granted_at": _when(grant.granted_at),
        "expires_at": _when(grant.expires_at),
        "revoked_at": _when(grant.revoked_at),
    }


def mfa_reset_data(reset: MfaReset) -> dict[str, Any]:
    return {
        "reset_id": reset.pk,
        "employee_id": reset.employee_id,
        "reset_at": _when(reset.created_at),
    }
