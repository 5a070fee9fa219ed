"""/sandbox/invoices/match, /unmatch, /flag and /unflag."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.sandbox.models import Invoice, InvoiceEvent
from apps.sandbox.selectors import effect_count
from tests.sandbox.conftest import post

pytestmark = pytest.mark.usefixtures("seeded")

# INV-2003 from Cobalt Office Supply: 189.90 EUR against PO-7003.
MATCH: dict[str, Any] = {
    "invoice_id": "INV-2003",
    "po_number": "PO-7003",
    "amount_cents": 18990,
    "currency": "EUR",
}


def status_of(invoice_id: str = "INV-2003") -> str:
    return Invoice.objects.get(pk=invoice_id).status


def test_match__po_and_amount_agree__200_matched(client: Client) -> None:
    response = post(client, "invoices/match", MATCH, key="k-match")
    assert response.status_code == 200
    assert response.json() == {
        "ok": True,
        "result": {
            "invoice": {
                "invoice_id": "INV-2003",
                "supplier": "Cobalt Office Supply",
                "po_number": "PO-7003",
                "amount_cents": 18990,
                "currency": "EUR",
                "status": "matched",
                "note": "",
            }
        },
    }
    assert effect_count("k-match") == 1


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        (
            {"po_number": "PO-7004"},
            "po_number",
            "PO-7004 is not the purchase order of invoice INV-2003",
        ),
        ({"amount_cents": 18999}, "amount_cents", "does not equal the invoice amount (18990)"),
        ({"currency": "SEK"}, "currency", "does not match the invoice's currency (EUR)"),
    ],
)
def test_match__disagrees_with_invoice__422_naming_field_still_open(
    client: Client, change: dict[str, Any], field: str, message: str
) -> None:
    response = post(client, "invoices/match", {**MATCH, **change})
    assert response.status_code == 422
    body = response.json()
    assert body["field"] == field
    assert message in body["error"]
    assert status_of() == "open"
    assert not InvoiceEvent.objects.exists()


def test_match__unknown_invoice__404_invoice_id(client: Client) -> None:
    response = post(client, "invoices/match", {**MATCH, "invoice_id": "INV-9999"})
    assert response.status_code == 404
    assert response.json()["field"] == "invoice_id"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"amount_cents": 0}, "amount_cents"),
        ({"po_number": ""}, "po_number"),
        ({"currency": "€"}, "currency"),
        ({"supplier": "Cobalt"}, "supplier"),
    ],
)
def test_match__bad_param__400_naming_field(
    client: Client, change: dict[str, Any], field: str
) -> None:
    response = post(client, "invoices/match", {**MATCH, **change})
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert status_of() == "open"


def test_match__already_matched__422_invoice_id(client: Client) -> None:
    post(client, "invoices/match", MATCH, key="k-1")
    response = post(client, "invoices/match", MATCH, key="k-2")
    assert response.status_code == 422
    assert response.json()["error"] == "invoice_id: invoice INV-2003 is already matched"
    assert effect_count("k-2") == 0


def test_match__replayed__same_answer_one_match(client: Client) -> None:
    first = post(client, "invoices/match", MATCH, key="k-1")
    again = post(client, "invoices/match", MATCH, key="k-1")
    assert again.json() == first.json()
    assert InvoiceEvent.objects.filter(kind="matched").count() == 1


def test_match__flagged_invoice__422_on_hold(client: Client) -> None:
    post(client, "invoices/flag", {"invoice_id": "INV-2003", "note": "duplicate?"}, key="k-f")
    response = post(client, "invoices/match", MATCH, key="k-m")
    assert response.status_code == 422
    assert "on hold (flagged)" in response.json()["error"]
    assert status_of() == "flagged"


@pytest.mark.parametrize("by", ["idempotency_key_of_original", "invoice_id"])
def test_unmatch__matched_invoice__open_again(client: Client, by: str) -> None:
    post(client, "invoices/match", MATCH, key="k-match")
    reference = "k-match" if by == "idempotency_key_of_original" else "INV-2003"
    response = post(client, "invoices/unmatch", {by: reference}, key="k-unmatch")
    assert response.status_code == 200
    assert response.json()["result"]["changed"] is True
    assert response.json()["result"]["invoice"]["status"] == "open"
    assert status_of() == "open"
    assert effect_count("k-unmatch") == 1


def test_unmatch__twice__second_changes_nothing(client: Client) -> None:
    post(client, "invoices/match", MATCH, key="k-match")
    post(client, "invoices/unmatch", {"idempotency_key_of_original": "k-match"}, key="k-u1")
    response = post(
        client, "invoices/unmatch", {"idempotency_key_of_original": "k-match"}, key="k-u2"
    )
    assert response.status_code == 200
    assert response.json()["result"]["changed"] is False
    assert status_of() == "open"
    assert effect_count("k-u2") == 0


def test_unmatch__old_match_after_rematch__changes_nothing(client: Client) -> None:
    # Given a match, its undo, and a new match under another key
    post(client, "invoices/match", MATCH, key="k-old")
    post(client, "invoices/unmatch", {"idempotency_key_of_original": "k-old"}, key="k-u1")
    post(client, "invoices/match", MATCH, key="k-new")
    # When the old match is undone again
    response = post(
        client, "invoices/unmatch", {"idempotency_key_of_original": "k-old"}, key="k-u2"
    )
    # Then the new match stands
    assert response.json()["result"]["changed"] is False
    assert status_of() == "matched"


def test_unmatch__original_result_echoed__open_again(client: Client) -> None:
    # The connector sends the original's result along with its key.
    result = post(client, "invoices/match", MATCH, key="k-match").json()["result"]
    params = {"idempotency_key_of_original": "k-match", **result}
    response = post(client, "invoices/unmatch", params, key="k-match-undo")
    assert response.status_code == 200
    assert status_of() == "open"


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"idempotency_key_of_original": "never-used"}, 404, "idempotency_key_of_original"),
        ({"invoice_id": "INV-2004"}, 404, "invoice_id"),
        ({"invoice_id": "INV-9999"}, 404, "invoice_id"),
        ({"idempotency_key_of_original": "k-match", "invoice_id": "INV-2004"}, 422, "invoice_id"),
        ({"note": "undo please"}, 400, "idempotency_key_of_original"),
    ],
)
def test_unmatch__nothing_to_undo__4xx_naming_field(
    client: Client, params: dict[str, str], status: int, field: str
) -> None:
    post(client, "invoices/match", MATCH, key="k-match")
    response = post(client, "invoices/unmatch", params, key="k-u")
    assert response.status_code == status
    assert response.json()["field"] == field
    assert status_of() == "matched"


def test_flag__open_invoice__flagged_with_note(client: Client) -> None:
    response = post(
        client, "invoices/flag", {"invoice_id": "INV-2005", "note": "VAT id missing"}, key="k-f"
    )
    assert response.status_code == 200
    invoice = response.json()["result"]["invoice"]
    assert (invoice["status"], invoice["note"]) == ("flagged", "VAT id missing")
    assert effect_count("k-f") == 1


def test_flag__already_flagged__422_invoice_id(client: Client) -> None:
    post(client, "invoices/flag", {"invoice_id": "INV-2005", "note": "one"}, key="k-1")
    response = post(client, "invoices/flag", {"invoice_id": "INV-2005", "note": "two"}, key="k-2")
    assert response.status_code == 422
    assert response.json()["field"] == "invoice_id"
    assert Invoice.objects.get(pk="INV-2005").note == "one"


def test_flag__note_too_long__400_note(client: Client) -> None:
    response = post(client, "invoices/flag", {"invoice_id": "INV-2005", "note": "n" * 1001})
    assert response.status_code == 400
    assert response.json()["field"] == "note"
    assert status_of("INV-2005") == "open"


def test_unflag__flag_on_matched_invoice__matched_again(client: Client) -> None:
    # Given a matched invoice put on hold
    post(client, "invoices/match", MATCH, key="k-m")
    post(client, "invoices/flag", {"invoice_id": "INV-2003", "note": "hold"}, key="k-f")
    # When the hold is lifted
    response = post(client, "invoices/unflag", {"idempotency_key_of_original": "k-f"}, key="k-u")
    # Then the invoice is back to matched, without the note
    assert response.status_code == 200
    invoice = response.json()["result"]["invoice"]
    assert (invoice["status"], invoice["note"]) == ("matched", "")


def test_unflag__twice__second_changes_nothing(client: Client) -> None:
    post(client, "invoices/flag", {"invoice_id": "INV-2005", "note": "hold"}, key="k-f")
    post(client, "invoices/unflag", {"invoice_id": "INV-2005"}, key="k-u1")
    response = post(client, "invoices/unflag", {"invoice_id": "INV-2005"}, key="k-u2")
    assert response.status_code == 200
    assert response.json()["result"]["changed"] is False
    assert status_of("INV-2005") == "open"
    assert effect_count("k-u2") == 0


def test_unmatch__while_flagged__422_unflag_first(client: Client) -> None:
    post(client, "invoices/match", MATCH, key="k-m")
    post(client, "invoices/flag", {"invoice_id": "INV-2003", "note": "hold"}, key="k-f")
    response = post(client, "invoices/unmatch", {"invoice_id": "INV-2003"}, key="k-u")
    assert response.status_code == 422
    assert "unflag it before unmatching" in response.json()["error"]
    assert status_of() == "flagged"
