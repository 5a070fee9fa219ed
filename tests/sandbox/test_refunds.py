"""/sandbox/refunds, /sandbox/refunds/undo, /sandbox/orders/lookup and /sandbox/noop."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.sandbox.models import IdempotencyRecord, Refund
from apps.sandbox.selectors import effect_count, refunds_for
from tests.concurrency import at_once
from tests.sandbox.conftest import SANDBOX_TOKEN, order, post

pytestmark = pytest.mark.usefixtures("seeded")

# Order 1009 (Northwind Bakery, smb) was paid 240.00 EUR.
REFUND: dict[str, Any] = {
    "order_id": "1009",
    "amount_cents": 5000,
    "currency": "EUR",
    "reason": "parcel arrived damaged",
}


def test_refund__within_balance__201_and_balance_shrinks(client: Client) -> None:
    # When part of an order is refunded
    response = post(client, "refunds", REFUND, key="k-refund", action="act-1")
    # Then the refund is issued and the order's refundable balance shrinks by as much
    assert response.status_code == 201
    body = response.json()
    assert body["ok"] is True
    result = body["result"]
    assert result["refund_id"].startswith("rf_")
    assert result["order_id"] == "1009"
    assert result["amount_cents"] == 5000
    assert result["status"] == "issued"
    assert result["order"] == {
        "order_id": "1009",
        "customer": "Northwind Bakery",
        "segment": "smb",
        "currency": "EUR",
        "total_cents": 24000,
        "refunded_cents": 5000,
        "refundable_cents": 19000,
        "status": "partially_refunded",
    }
    refund = Refund.objects.get()
    assert (refund.idempotency_key, refund.action_ref) == ("k-refund", "act-1")
    assert effect_count("k-refund") == 1


def test_refund__whole_balance__order_refunded(client: Client) -> None:
    response = post(client, "refunds", {**REFUND, "amount_cents": 24000})
    assert response.status_code == 201
    assert response.json()["result"]["order"]["status"] == "refunded"
    assert order("1009").refundable_cents == 0


@pytest.mark.parametrize("already_refunded", [0, 20000])
def test_refund__above_refundable_balance__422_amount_cents_nothing_written(
    client: Client, already_refunded: int
) -> None:
    # Given an order with part of it perhaps refunded already
    if already_refunded:
        post(client, "refunds", {**REFUND, "amount_cents": already_refunded}, key="k-first")
    # When more than what is left is asked for
    remaining = 24000 - already_refunded
    response = post(client, "refunds", {**REFUND, "amount_cents": remaining + 1}, key="k-over")
    # Then it is refused naming the amount and what is left, and nothing changes
    assert response.status_code == 422
    body = response.json()
    assert body["ok"] is False
    assert body["field"] == "amount_cents"
    assert f"refundable balance of order 1009 ({remaining} of 24000 EUR)" in body["error"]
    assert order("1009").refunded_cents == already_refunded
    assert effect_count("k-over") == 0


def test_refund__other_currency__422_currency_nothing_written(client: Client) -> None:
    response = post(client, "refunds", {**REFUND, "currency": "USD"})
    assert response.status_code == 422
    assert response.json() == {
        "ok": False,
        "error": "currency: USD does not match the currency of order 1009 (EUR)",
        "field": "currency",
    }
    assert not Refund.objects.exists()
    assert order("1009").refunded_cents == 0


def test_refund__unknown_order__404_order_id(client: Client) -> None:
    response = post(client, "refunds", {**REFUND, "order_id": "9999"})
    assert response.status_code == 404
    assert response.json()["field"] == "order_id"
    assert not Refund.objects.exists()


@pytest.mark.parametrize(
    ("change", "field", "message"),
    [
        ({"order_id": None}, "order_id", "is required"),
        ({"order_id": ""}, "order_id", "must not be empty"),
        ({"order_id": 1009}, "order_id", "must be a string"),
        ({"amount_cents": 0}, "amount_cents", "must be at least 1"),
        ({"amount_cents": -500}, "amount_cents", "must be at least 1"),
        ({"amount_cents": "5000"}, "amount_cents", "must be an integer"),
        ({"amount_cents": 50.5}, "amount_cents", "must be an integer"),
        ({"amount_cents": True}, "amount_cents", "must be an integer"),
        ({"currency": "eur"}, "currency", "three-letter ISO 4217 code"),
        ({"currency": "EURO"}, "currency", "at most 3 characters"),
        ({"reason": "x" * 501}, "reason", "at most 500 characters"),
        ({"refund_everything": True}, "refund_everything", "is not a known field"),
    ],
)
def test_refund__bad_param__400_naming_field_nothing_written(
    client: Client, change: dict[str, Any], field: str, message: str
) -> None:
    params = {name: value for name, value in {**REFUND, **change}.items() if value is not None}
    response = post(client, "refunds", params)
    assert response.status_code == 400
    body = response.json()
    assert body["field"] == field
    assert body["error"].startswith(f"{field}: ")
    assert message in body["error"]
    assert not Refund.objects.exists()
    assert order("1009").refunded_cents == 0


def test_refund__no_idempotency_key__400_naming_header(client: Client) -> None:
    response = post(client, "refunds", REFUND, key=None)
    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"
    assert not Refund.objects.exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.parametrize(
    ("body", "content_type", "status", "field"),
    [
        ("{not json", "application/json", 400, "body"),
        ("[1, 2]", "application/json", 400, "body"),
        ("order_id=1009", "application/x-www-form-urlencoded", 415, "Content-Type"),
    ],
)
def test_refund__body_not_a_json_object__4xx_nothing_written(
    client: Client, body: str, content_type: str, status: int, field: str
) -> None:
    response = post(client, "refunds", body, content_type=content_type)
    assert response.status_code == status
    assert response.json()["field"] == field
    assert not Refund.objects.exists()


def test_refund__get__405_json(client: Client) -> None:
    response = client.get("/sandbox/refunds", headers={"Authorization": f"Bearer {SANDBOX_TOKEN}"})
    assert response.status_code == 405
    assert response["Allow"] == "POST"
    assert response.json()["ok"] is False


def test_refund__two_at_once_on_one_order__never_above_total(
    transactional_db: None, client: Client
) -> None:
    # Given an order of 240.00 EUR, and ten refunds of 50.00 EUR with different keys sent at once
    def refund(index: int) -> int:
        response = post(Client(), "refunds", REFUND, key=f"k-{index}")
        status: int = response.status_code
        return status

    statuses = at_once(10, refund)
    # Then exactly four fit and the rest are refused: the order is never over-refunded
    assert sorted(statuses) == [201] * 4 + [422] * 6
    assert order("1009").refunded_cents == 20000
    assert refunds_for("1009").count() == 4


def test_lookup__order_with_refunds__both_returned(client: Client) -> None:
    # Given an order with two refunds
    post(client, "refunds", REFUND, key="k-1")
    post(client, "refunds", {**REFUND, "amount_cents": 1000}, key="k-2")
    # When it is looked up (no key needed: a read changes nothing)
    response = post(client, "orders/lookup", {"order_id": "1009"}, key=None)
    # Then the order comes with its refunds, oldest first
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["order"]["refunded_cents"] == 6000
    assert [refund["amount_cents"] for refund in result["refunds"]] == [5000, 1000]


def test_lookup__unknown_order__404_order_id(client: Client) -> None:
    response = post(client, "orders/lookup", {"order_id": "0000"})
    assert response.status_code == 404
    assert response.json()["field"] == "order_id"


def test_noop__any_params__200_empty_result(client: Client) -> None:
    response = post(client, "noop", {"idempotency_key_of_original": "k-lookup"})
    assert response.status_code == 200
    assert response.json() == {"ok": True, "result": {}}


def test_unknown_path__json_404(client: Client) -> None:
    response = post(client, "refunds/cancel", {"refund_id": "rf_x"})
    assert response.status_code == 404
    assert response.json()["ok"] is False


def issue(client: Client, key: str = "k-refund", amount_cents: int = 5000) -> dict[str, Any]:
    response = post(client, "refunds", {**REFUND, "amount_cents": amount_cents}, key=key)
    assert response.status_code == 201
    result: dict[str, Any] = response.json()["result"]
    return result


@pytest.mark.parametrize("by", ["idempotency_key_of_original", "refund_id"])
def test_refund_undo__issued_refund__reversed_and_balance_restored(client: Client, by: str) -> None:
    # Given a refund of 50.00 EUR on order 1009
    refund = issue(client)
    reference = "k-refund" if by == "idempotency_key_of_original" else refund["refund_id"]
    # When it is undone, named by its key or by its id
    response = post(client, "refunds/undo", {by: reference}, key="k-undo")
    # Then the refund is reversed and the whole order is refundable again
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["changed"] is True
    assert result["refund"]["status"] == "reversed"
    assert result["refund"]["reversed_at"]
    assert result["order"]["refundable_cents"] == 24000
    assert result["order"]["status"] == "paid"
    assert Refund.objects.get().reversed_by_key == "k-undo"
    assert effect_count("k-undo") == 1


def test_refund_undo__twice_with_other_keys__restored_once(client: Client) -> None:
    # Given two refunds, one of them undone already
    first = issue(client, key="k-first")
    issue(client, key="k-second", amount_cents=3000)
    post(client, "refunds/undo", {"refund_id": first["refund_id"]}, key="k-undo-1")
    # When the same refund is undone again under another key
    response = post(client, "refunds/undo", {"refund_id": first["refund_id"]}, key="k-undo-2")
    # Then it answers as before but changes nothing: only the other refund still counts
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["changed"] is False
    assert result["refund"]["status"] == "reversed"
    assert order("1009").refunded_cents == 3000
    assert effect_count("k-undo-2") == 0


def test_refund_undo__many_at_once__restored_once(transactional_db: None) -> None:
    # Given a refund, and ten undos of it with different keys sent at once
    refund = issue(Client())

    def undo(index: int) -> bool:
        response = post(
            Client(), "refunds/undo", {"refund_id": refund["refund_id"]}, key=f"u-{index}"
        )
        assert response.status_code == 200
        changed: bool = response.json()["result"]["changed"]
        return changed

    changes = at_once(10, undo)
    # Then exactly one changed anything, and the balance was restored once
    assert changes.count(True) == 1
    assert order("1009").refunded_cents == 0


def test_refund_undo__original_result_echoed__reversed(client: Client) -> None:
    # Given the connector's undo: the original's key with its whole result alongside
    refund = issue(client)
    params = {"idempotency_key_of_original": "k-refund", **refund}
    # When it is sent
    response = post(client, "refunds/undo", params, key="k-refund-undo")
    # Then the extra fields are ignored and the refund is reversed
    assert response.status_code == 200
    assert response.json()["result"]["refund"]["status"] == "reversed"
    assert order("1009").refunded_cents == 0


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"refund_id": "rf_unknown"}, 404, "refund_id"),
        ({"idempotency_key_of_original": "never-used"}, 404, "idempotency_key_of_original"),
        ({}, 400, "idempotency_key_of_original"),
        ({"order_id": "1009"}, 400, "idempotency_key_of_original"),
        ({"idempotency_key_of_original": "k-refund", "refund_id": "rf_other"}, 422, "refund_id"),
    ],
)
def test_refund_undo__nothing_to_undo__4xx_naming_field(
    client: Client, params: dict[str, Any], status: int, field: str
) -> None:
    issue(client)
    response = post(client, "refunds/undo", params, key="k-undo")
    assert response.status_code == status
    assert response.json()["field"] == field
    assert order("1009").refunded_cents == 5000
