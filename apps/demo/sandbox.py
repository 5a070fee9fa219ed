"""The sandbox's demo data: orders to refund, supplier invoices to match, employees to grant
access to. Running it again changes nothing that exists (refunds made since stay as they are)."""

from __future__ import annotations

from django.db import transaction

from apps.sandbox.models import Employee, Invoice, Order, Segment

# (order id, customer, segment, total in cents); all in EUR.
ORDERS: list[tuple[str, str, str, int]] = [
    ("1001", "Ana Costa", Segment.RETAIL, 1_000),
    ("1002", "Ben Okafor", Segment.RETAIL, 2_499),
    ("1003", "Chiara Rossi", Segment.RETAIL, 3_950),
    ("1004", "Dmitri Volkov", Segment.RETAIL, 4_800),
    ("1005", "Elif Yilmaz", Segment.RETAIL, 7_420),
    ("1006", "Farah Haddad", Segment.RETAIL, 12_900),
    ("1007", "Gustav Lind", Segment.RETAIL, 5_999),
    ("1008", "Hana Sato", Segment.RETAIL, 18_750),
    ("1009", "Northwind Bakery", Segment.SMB, 24_000),
    ("1010", "Brightdesk Studio", Segment.SMB, 31_500),
    ("1011", "Kestrel Cycles", Segment.SMB, 45_000),
    ("1012", "Larch & Co", Segment.SMB, 9_900),
    ("1013", "Mosaic Dental", Segment.SMB, 62_000),
    ("1014", "Nordlicht GmbH", Segment.SMB, 15_600),
    ("1015", "Olive Lane Hotel", Segment.SMB, 38_250),
    ("1016", "Priya Raman", Segment.VIP, 54_900),
    ("1017", "Quentin Moreau", Segment.VIP, 72_000),
    ("1018", "Rosa Delgado", Segment.VIP, 90_000),
    ("1019", "Samuel Achterberg", Segment.VIP, 27_800),
    ("1020", "Tove Nilsen", Segment.VIP, 84_350),
]

# (invoice id, supplier, purchase order, amount in cents); all in EUR.
INVOICES: list[tuple[str, str, str, int]] = [
    ("INV-2001", "Acme Packaging", "PO-7001", 128_000),
    ("INV-2002", "Baltic Freight", "PO-7002", 342_550),
    ("INV-2003", "Cobalt Office Supply", "PO-7003", 18_990),
    ("INV-2004", "Delta Cleaning", "PO-7004", 96_000),
    ("INV-2005", "Evergreen Print", "PO-7005", 45_320),
    ("INV-2006", "Fjord Logistics", "PO-7006", 1_250_000),
    ("INV-2007", "Granite IT Services", "PO-7007", 780_000),
    ("INV-2008", "Harbor Catering", "PO-7008", 23_400),
    ("INV-2009", "Ironwood Furniture", "PO-7009", 512_800),
    ("INV-2010", "Juniper Legal", "PO-7010", 300_000),
]

# (employee id, name, department, still employed)
EMPLOYEES: list[tuple[str, str, str, bool]] = [
    ("E-101", "Maya Fischer", "Support", True),
    ("E-102", "Jonas Berg", "Finance", True),
    ("E-103", "Leila Nasser", "Engineering", True),
    ("E-104", "Tomasz Nowak", "Sales", True),
    ("E-105", "Ines Duarte", "Operations", True),
    ("E-106", "Victor Hale", "Engineering", False),
]


@transaction.atomic
def sandbox_seed() -> list[str]:
    """Create what is missing of the sandbox's data; return what was created, for the log."""
    created: list[str] = []
    for order_id, customer, segment, total in ORDERS:
        _, new = Order.objects.get_or_create(
            pk=order_id,
            defaults={
                "customer": customer,
                "segment": segment,
                "currency": "EUR",
                "total_cents": total,
            },
        )
        if new:
            created.append(f"order {order_id}")
    for invoice_id, supplier, po_number, amount in INVOICES:
        _, new = Invoice.objects.get_or_create(
            pk=invoice_id,
            defaults={
                "supplier": supplier,
                "po_number": po_number,
                "amount_cents": amount,
                "currency": "EUR",
            },
        )
        if new:
            created.append(f"invoice {invoice_id}")
    for employee_id, name, department, active in EMPLOYEES:
        _, new = Employee.objects.get_or_create(
            pk=employee_id, defaults={"name": name, "department": department, "active": active}
        )
        if new:
            created.append(f"employee {employee_id}")
    return created
