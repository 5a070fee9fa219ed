"""sandbox_seed(): the demo's orders, invoices and employees, created once."""

from __future__ import annotations

import pytest

from apps.demo.sandbox import sandbox_seed
from apps.sandbox.models import Employee, Invoice, Order

pytestmark = pytest.mark.django_db


def test_seed__empty_sandbox__orders_invoices_employees() -> None:
    created = sandbox_seed()
    orders = Order.objects.all()
    assert [order.pk for order in orders] == [str(number) for number in range(1001, 1021)]
    assert {order.currency for order in orders} == {"EUR"}
    assert {order.segment for order in orders} == {"retail", "smb", "vip"}
    assert all(1_000 <= order.total_cents <= 90_000 for order in orders)
    assert Invoice.objects.count() == 10
    assert all(invoice.po_number.startswith("PO-") for invoice in Invoice.objects.all())
    assert Employee.objects.filter(active=True).count() >= 3
    assert len(created) == 20 + 10 + Employee.objects.count()


def test_seed__twice__second_creates_nothing_and_keeps_changes() -> None:
    # Given a seeded sandbox in which an order has been partly refunded since
    sandbox_seed()
    Order.objects.filter(pk="1001").update(refunded_cents=500, status="partially_refunded")
    # When the seed runs again
    created = sandbox_seed()
    # Then nothing is created and nothing is reset
    assert created == []
    assert Order.objects.count() == 20
    assert Order.objects.get(pk="1001").refunded_cents == 500
