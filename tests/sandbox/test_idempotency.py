"""Idempotency keys: a replay gets the first answer and changes nothing; a reused key with other
params is refused; twenty copies sent at once make one effect."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.sandbox.idempotency import params_digest
from apps.sandbox.models import IdempotencyRecord, Refund
from apps.sandbox.selectors import effect_count, refunds_for
from tests.concurrency import at_once
from tests.sandbox.conftest import order, post

pytestmark = pytest.mark.usefixtures("seeded")

REFUND: dict[str, Any] = {
    "order_id": "1009",
    "amount_cents": 5000,
    "currency": "EUR",
    "reason": "parcel arrived damaged",
}


def test_replay__same_key_same_params__first_answer_and_one_refund(client: Client) -> None:
    # Given a refund issued under a key
    first = post(client, "refunds", REFUND, key="k-1")
    # When the same request comes again (a retry after a lost answer), params in another order
    again = post(client, "refunds", dict(reversed(list(REFUND.items()))), key="k-1")
    # Then the answer is the first one, word for word, and the money went out once
    assert again.status_code == first.status_code == 201
    assert again.json() == first.json()
    assert again["Idempotent-Replayed"] == "true"
    assert "Idempotent-Replayed" not in first
    assert refunds_for("1009").count() == 1
    assert order("1009").refunded_cents == 5000
    assert effect_count("k-1") == 1


def test_replay__same_key_other_params__409_nothing_changed(client: Client) -> None:
    post(client, "refunds", REFUND, key="k-1")
    response = post(client, "refunds", {**REFUND, "amount_cents": 6000}, key="k-1")
    assert response.status_code == 409
    assert response.json() == {
        "ok": False,
        "error": "idempotency key reused with different params",
    }
    assert order("1009").refunded_cents == 5000
    assert effect_count("k-1") == 1


def test_replay__refused_request__same_refusal_even_once_it_would_fit(client: Client) -> None:
    # Given a refund refused for exceeding the balance, after an earlier refund
    post(client, "refunds", {**REFUND, "amount_cents": 20000}, key="k-big")
    refused = post(client, "refunds", REFUND, key="k-over")
    assert refused.status_code == 422
    # When the earlier refund is undone and the refused request is replayed
    post(client, "refunds/undo", {"idempotency_key_of_original": "k-big"}, key="k-undo")
    again = post(client, "refunds", REFUND, key="k-over")
    # Then the replay gets the first answer: a key's outcome never changes
    assert again.status_code == 422
    assert again.json() == refused.json()
    assert effect_count("k-over") == 0


def test_replay__undo_replayed__same_answer_restored_once(client: Client) -> None:
    post(client, "refunds", REFUND, key="k-1")
    first = post(client, "refunds/undo", {"idempotency_key_of_original": "k-1"}, key="k-undo")
    again = post(client, "refunds/undo", {"idempotency_key_of_original": "k-1"}, key="k-undo")
    assert again.status_code == first.status_code == 200
    assert again.json() == first.json()
    assert again.json()["result"]["changed"] is True
    assert order("1009").refunded_cents == 0


def test_key__same_key_on_another_endpoint__a_separate_request(client: Client) -> None:
    # Keys are scoped per endpoint: an undo may be sent under its original's key.
    post(client, "refunds", REFUND, key="action-42")
    response = post(
        client, "refunds/undo", {"idempotency_key_of_original": "action-42"}, key="action-42"
    )
    assert response.status_code == 200
    assert response.json()["result"]["changed"] is True
    assert effect_count("action-42") == 2


def test_key__recorded_with_digest_and_action(client: Client) -> None:
    post(client, "refunds", REFUND, key="k-1", action="0b6f3c1e-action")
    record = IdempotencyRecord.objects.get()
    assert (record.endpoint, record.key, record.action_ref) == ("refunds", "k-1", "0b6f3c1e-action")
    assert record.digest == params_digest(REFUND)
    assert record.status == 201


def test_key__too_long__400_naming_header(client: Client) -> None:
    response = post(client, "refunds", REFUND, key="k" * 256)
    assert response.status_code == 400
    assert response.json()["field"] == "Idempotency-Key"
    assert not Refund.objects.exists()


def test_replay__twenty_copies_at_once__exactly_one_refund(transactional_db: None) -> None:
    # Given twenty copies of one refund request, released at the same instant
    def send(index: int) -> tuple[int, Any]:
        response = post(Client(), "refunds", REFUND, key="k-storm")
        return response.status_code, response.json()

    answers = at_once(20, send)
    # Then all twenty got the same answer, and the money went out once
    assert {status for status, _ in answers} == {201}
    assert len({body["result"]["refund_id"] for _, body in answers}) == 1
    assert refunds_for("1009").count() == 1
    assert order("1009").refunded_cents == 5000
    assert effect_count("k-storm") == 1
    assert IdempotencyRecord.objects.filter(key="k-storm").count() == 1


def test_replay__twenty_copies_at_once_with_other_params__one_refund_rest_409(
    transactional_db: None,
) -> None:
    # Given twenty requests under one key, each for another amount
    def send(index: int) -> int:
        response = post(Client(), "refunds", {**REFUND, "amount_cents": 100 + index}, key="k-x")
        status: int = response.status_code
        return status

    statuses = at_once(20, send)
    # Then one ran and the other nineteen were refused as key reuse
    assert sorted(statuses) == [201] + [409] * 19
    assert refunds_for("1009").count() == 1
