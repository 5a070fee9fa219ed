"""Supplier invoices: match one to its purchase order (releasing it for payment), put one on
hold with a note, and undo either."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from apps.sandbox.models import Invoice, InvoiceEvent
from apps.sandbox.params import SandboxError

ORIGINAL_KEY = "idempotency_key_of_original"


def _locked_invoice(invoice_id: str) -> Invoice:
    invoice = Invoice.objects.select_for_update().filter(pk=invoice_id).first()
    if invoice is None:
        raise SandboxError(404, f"there is no invoice {invoice_id!r}", "invoice_id")
    return invoice


def _record(
    invoice: Invoice, kind: str, *, idempotency_key: str, action_ref: str, note: str = ""
) -> InvoiceEvent:
    return InvoiceEvent.objects.create(
        invoice=invoice,
        kind=kind,
        previous_status=invoice.status,
        note=note,
        idempotency_key=idempotency_key,
        action_ref=action_ref,
    )


def _undo_target(
    kind: str, *, original_key: str | None, invoice_id: str | None
) -> tuple[Invoice, InvoiceEvent]:
    """The invoice (locked) and the match or flag an undo names: by the key that made it, or by
    the invoice (then its latest one), or both if they agree."""
    verb = "match" if kind == InvoiceEvent.Kind.MATCHED else "flag"
    if original_key is not None:
        made = InvoiceEvent.objects.filter(kind=kind, idempotency_key=original_key).first()
        if made is None:
            raise SandboxError(404, f"no {verb} was made with key {original_key!r}", ORIGINAL_KEY)
        if invoice_id is not None and invoice_id != made.invoice_id:
            raise SandboxError(
                422,
                f"the {verb} made with key {original_key!r} was not on {invoice_id!r}",
                "invoice_id",
            )
        invoice = _locked_invoice(made.invoice_id)
        return invoice, InvoiceEvent.objects.select_for_update().get(pk=made.pk)
    invoice = _locked_invoice(str(invoice_id))
    event = (
        InvoiceEvent.objects.select_for_update()
        .filter(invoice=invoice, kind=kind)
        .order_by("-created_at", "-id")
        .first()
    )
    if event is None:
        raise SandboxError(404, f"invoice {invoice.pk} has no {verb} to undo", "invoice_id")
    return invoice, event


@transaction.atomic
def invoice_match(
    *,
    invoice_id: str,
    po_number: str,
    amount_cents: int,
    currency: str,
    idempotency_key: str,
    action_ref: str = "",
) -> Invoice:
    """Match an open invoice to its purchase order: PO, currency and amount must all agree."""
    invoice = _locked_invoice(invoice_id)
    if invoice.status == Invoice.Status.FLAGGED:
        raise SandboxError(
            422,
            f"invoice {invoice.pk} is on hold (flagged); unflag it before matching",
            "invoice_id",
        )
    if invoice.status == Invoice.Status.MATCHED:
        raise SandboxError(422, f"invoice {invoice.pk} is already matched", "invoice_id")
    if po_number != invoice.po_number:
        raise SandboxError(
            422, f"{po_number} is not the purchase order of invoice {invoice.pk}", "po_number"
        )
    if currency != invoice.currency:
        raise SandboxError(
            422,
            f"{currency} does not match the invoice's currency ({invoice.currency})",
            "currency",
        )
    if amount_cents != invoice.amount_cents:
        raise SandboxError(
            422,
            f"{amount_cents} does not equal the invoice amount ({invoice.amount_cents})",
            "amount_cents",
        )
    _record(
        invoice, InvoiceEvent.Kind.MATCHED, idempotency_key=idempotency_key, action_ref=action_ref
    )
    invoice.status = Invoice.Status.MATCHED
    invoice.save(update_fields=["status", "updated_at"])
    return invoice


@transaction.atomic
def invoice_unmatch(
    *,
    original_key: str | None = None,
    invoice_id: str | None = None,
    idempotency_key: str,
    action_ref: str = "",
) -> tuple[Invoice, bool]:
    """Take a match back: the invoice is open again. Returns whether anything changed."""
    invoice, match = _undo_target(
        InvoiceEvent.Kind.MATCHED, original_key=original_key, invoice_id=invoice_id
    )
    if match.undone_at is not None:
        return invoice, False
    if invoice.status == Invoice.Status.FLAGGED:
        raise SandboxError(
            422,
            f"invoice {invoice.pk} is on hold (flagged); unflag it before unmatching",
            "invoice_id",
        )
    _record(
        invoice, InvoiceEvent.Kind.UNMATCHED, idempotency_key=idempotency_key, action_ref=action_ref
    )
    match.undone_at = timezone.now()
    match.save(update_fields=["undone_at"])
    invoice.status = Invoice.Status.OPEN
    invoice.save(update_fields=["status", "updated_at"])
    return invoice, True


@transaction.atomic
def invoice_flag(
    *, invoice_id: str, note: str, idempotency_key: str, action_ref: str = ""
) -> Invoice:
    """Put an invoice on hold with a note for accounts payable (a matched one too: the hold
    stops its payment)."""
    invoice = _locked_invoice(invoice_id)
    if invoice.status == Invoice.Status.FLAGGED:
        raise SandboxError(422, f"invoice {invoice.pk} is already flagged", "invoice_id")
    _record(
        invoice,
        InvoiceEvent.Kind.FLAGGED,
        idempotency_key=idempotency_key,
        action_ref=action_ref,
        note=note,
    )
    invoice.status = Invoice.Status.FLAGGED
    invoice.note = note
    invoice.save(update_fields=["status", "note", "updated_at"])
    return invoice


@transaction.atomic
def invoice_unflag(
    *,
    original_key: str | None = None,
    invoice_id: str | None = None,
    idempotency_key: str,
    action_ref: str = "",
) -> tuple[Invoice, bool]:
    """Lift a hold: the invoice returns to the status it had before. Returns whether anything
    changed."""
    invoice, flag = _undo_target(
        InvoiceEvent.Kind.FLAGGED, original_key=original_key, invoice_id=invoice_id
    )
    if flag.undone_at is not None:
        return invoice, False
    _record(
        invoice, InvoiceEvent.Kind.UNFLAGGED, idempotency_key=idempotency_key, action_ref=action_ref
    )
    flag.undone_at = timezone.now()
    flag.save(update_fields=["undone_at"])
    invoice.status = flag.previous_status
    invoice.note = ""
    invoice.save(update_fields=["status", "note", "updated_at"])
    return invoice, True
