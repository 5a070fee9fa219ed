"""The queue and item pages: roles, filters, counts, the htmx fragments, decisions with their
errors next to the fields, and the feedback export."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.roles import Role
from apps.actions.models import Status
from apps.books.models import BookVersion
from apps.registry.services import IssuedKey
from apps.reviews.models import ReviewDecision, State
from tests.announced import Announced
from tests.reviews.conftest import hold, reload

pytestmark = pytest.mark.django_db
HTMX = {"HX-Request": "true"}


@pytest.mark.parametrize("role", [Role.RISK, Role.FINANCE, Role.ONCALL, None])
def test_review_pages__without_the_supervisor_role__403(
    book: BookVersion, key: IssuedKey, client_for: Any, role: Role | None
) -> None:
    item = hold(key)
    client = client_for(role)
    for url in ("/reviews/", f"/reviews/{item.pk}/", f"/reviews/{item.pk}/status"):
        assert client.get(url).status_code == 403
    response = client.post(
        f"/reviews/{item.pk}/decide", {"verdict": "approve", "reason_code": "within-policy"}
    )
    assert response.status_code == 403
    assert reload(item.action).status == Status.PENDING_REVIEW


def test_item_page__signed_out__redirected_to_sign_in(book: BookVersion, key: IssuedKey) -> None:
    item = hold(key)
    response = Client().get(f"/reviews/{item.pk}/")
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]


def test_queue_page__items_held__listed_counted_and_filtered(
    book: BookVersion, key: IssuedKey, client_for: Any
) -> None:
    first = hold(key, amount_cents=12_000, subject="order:1043")
    hold(key, amount_cents=20_000, subject="order:1044")
    client = client_for(Role.SUPERVISOR)
    page = client.get("/reviews/").content.decode()
    assert "order:1043" in page
    assert "order:1044" in page
    assert "120.00 EUR" in page
    assert 'data-testid="queue-count-refunds"' in page
    assert "<strong>2</strong> open" in page

    fragment = client.get("/reviews/?zone=red", headers=HTMX).content.decode()
    assert fragment.startswith('\n<div id="queue-list"') or fragment.lstrip().startswith(
        '<div id="queue-list"'
    )
    assert "<html" not in fragment
    assert "order:1043" not in fragment
    assert "Nothing is waiting for a decision with these filters" in fragment

    overdue = client.get("/reviews/?overdue=on", headers=HTMX).content.decode()
    assert "order:1043" not in overdue
    yellow = client.get("/reviews/?zone=yellow&workflow=refunds", headers=HTMX).content.decode()
    assert f'href="/reviews/{first.pk}/"' in yellow


def test_queue_page__bad_filters__422_naming_each_filter(
    book: BookVersion, client_for: Any
) -> None:
    response = client_for(Role.SUPERVISOR).get("/reviews/?zone=purple&page=zero&workflow=nope")
    assert response.status_code == 422
    page = response.content.decode()
    assert 'id="zone-error"' in page
    assert 'id="page-error"' in page or "page" in page
    assert 'id="workflow-error"' in page


def test_item_page__held_item__shows_the_whole_story(
    book: BookVersion, key: IssuedKey, client_for: Any
) -> None:
    item = hold(key, amount_cents=12_000)
    page = client_for(Role.SUPERVISOR).get(f"/reviews/{item.pk}/").content.decode()
    assert "refund-bot wants to run <code>issue_refund</code> on order:1042: 120.00 EUR" in page
    assert "issue_refund-review-above-5000" in page
    assert "needs a person" in page
    assert "The parcel arrived damaged" in page
    assert "0.9300" in page
    assert "refunds v1" in page
    assert 'name="param.amount_cents" value="120.00"' in page


def test_item_page__earlier_actions_on_the_subject__shown(
    book: BookVersion, key: IssuedKey, client_for: Any
) -> None:
    earlier = hold(key, amount_cents=6_000)
    item = hold(key, amount_cents=7_000, idempotency_key="second")
    page = client_for(Role.SUPERVISOR).get(f"/reviews/{item.pk}/").content.decode()
    assert 'id="prior-actions"' in page
    assert "60.00 EUR" in page
    assert earlier.action.status in page


def test_decide_page__edited_amount__edited_params_queued(
    book: BookVersion, key: IssuedKey, client_for: Any, enqueued: Announced
) -> None:
    item = hold(key, amount_cents=12_000)
    client = client_for(Role.SUPERVISOR)
    response = client.post(
        f"/reviews/{item.pk}/decide",
        {
            "verdict": "edit_approve",
            "reason_code": "verified",
            "param.amount_cents": "90.50",
            "param.order_id": "1042",
            "param.currency": "EUR",
            "param.reason": "damaged",
        },
        headers=HTMX,
    )
    assert response.status_code == 200
    assert 'data-state="decided"' in response.content.decode()
    action = reload(item.action)
    assert action.params["amount_cents"] == 9_050
    assert action.status == Status.QUEUED
    assert ReviewDecision.objects.get(item=item).diff[0]["after"] == 9_050


@pytest.mark.parametrize(
    ("amount", "message"),
    [("ninety", "must be an amount in EUR"), ("90.505", "at most 2 decimals"), ("0", "minimum")],
)
def test_decide_page__bad_edited_amount__422_next_to_the_field(
    book: BookVersion, key: IssuedKey, client_for: Any, amount: str, message: str
) -> None:
    item = hold(key)
    response = client_for(Role.SUPERVISOR).post(
        f"/reviews/{item.pk}/decide",
        {"verdict": "edit_approve", "reason_code": "verified", "param.amount_cents": amount},
        headers=HTMX,
    )
    assert response.status_code == 422
    page = response.content.decode()
    assert message in page
    assert 'data-state="open"' in page
    assert reload(item.action).status == Status.PENDING_REVIEW
    assert reload(item.action).params["amount_cents"] == 12_000


def test_decide_page__missing_reason__422_next_to_the_field(
    book: BookVersion, key: IssuedKey, client_for: Any
) -> None:
    item = hold(key)
    response = client_for(Role.SUPERVISOR).post(
        f"/reviews/{item.pk}/decide", {"verdict": "reject", "reason_code": ""}, headers=HTMX
    )
    assert response.status_code == 422
    assert 'id="reason_code-error"' in response.content.decode()


def test_decide_page__decided_by_someone_else_first__409_with_a_message(
    book: BookVersion, key: IssuedKey, client_for: Any, frank_client: Client
) -> None:
    item = hold(key)
    body = {"verdict": "reject", "reason_code": "duplicate"}
    assert frank_client.post(f"/reviews/{item.pk}/decide", body, headers=HTMX).status_code == 200
    late = client_for(Role.SUPERVISOR).post(f"/reviews/{item.pk}/decide", body, headers=HTMX)
    assert late.status_code == 409
    assert "Already decided: reject by frank" in late.content.decode()


def test_claim_page__claim_then_unclaim__claim_shown_and_others_refused(
    book: BookVersion, key: IssuedKey, client_for: Any, frank_client: Client, alice: User
) -> None:
    item = hold(key)
    client = client_for(Role.SUPERVISOR)
    claimed = client.post(f"/reviews/{item.pk}/claim", headers=HTMX).content.decode()
    assert "Claimed by <strong>alice</strong>" in claimed
    refused = frank_client.post(f"/reviews/{item.pk}/claim", headers=HTMX)
    assert refused.status_code == 409
    assert "Already claimed by alice" in refused.content.decode()
    mine = client.get("/reviews/?mine=on", headers=HTMX).content.decode()
    assert f'href="/reviews/{item.pk}/"' in mine
    assert (
        f'href="/reviews/{item.pk}/"'
        not in frank_client.get("/reviews/?mine=on", headers=HTMX).content.decode()
    )
    client.post(f"/reviews/{item.pk}/unclaim", headers=HTMX)
    item.refresh_from_db()
    assert item.claimed_by is None


def test_decide_page__without_csrf_token__403_and_item_open(
    book: BookVersion, key: IssuedKey, alice: User
) -> None:
    item = hold(key)
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    response = client.post(
        f"/reviews/{item.pk}/decide", {"verdict": "reject", "reason_code": "duplicate"}
    )
    assert response.status_code == 403
    item.refresh_from_db()
    assert item.state == State.OPEN


def test_status_fragment__action_on_its_way__polls_every_second(
    book: BookVersion, key: IssuedKey, client_for: Any
) -> None:
    item = hold(key)
    client = client_for(Role.SUPERVISOR)
    client.post(
        f"/reviews/{item.pk}/decide", {"verdict": "approve", "reason_code": "within-policy"}
    )
    fragment = client.get(f"/reviews/{item.pk}/status", headers=HTMX).content.decode()
    assert 'hx-trigger="every 1s"' in fragment
    assert ">queued<" in fragment


def test_feedback_export__risk_role__decisions_as_json_lines(
    book: BookVersion, key: IssuedKey, client_for: Any, alice: User
) -> None:
    from apps.reviews.models import Verdict
    from apps.reviews.services import DecisionInput, review_decide

    item = hold(key)
    review_decide(
        item_id=item.pk,
        user=alice,
        given=DecisionInput(verdict=Verdict.REJECT, reason_code="other", reason_text="No"),
    )
    assert client_for(Role.SUPERVISOR).get("/reviews/feedback.jsonl").status_code == 403
    response = client_for(Role.RISK).get("/reviews/feedback.jsonl")
    assert response.status_code == 200
    assert response["Content-Type"] == "application/x-ndjson"
    lines = b"".join(response.streaming_content).decode().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert set(record) >= {"context", "correction", "rationale"}
    assert record["context"]["subject"] == "order:1042"
    assert record["correction"]["verdict"] == "reject"
    assert record["rationale"] == {"reason": "other", "text": "No"}
    assert record["decided_by"] == "alice"


def test_export_feedback_command__decisions__written_as_json_lines(
    book: BookVersion, key: IssuedKey, alice: User, tmp_path: Any
) -> None:
    from django.core.management import CommandError, call_command

    from apps.reviews.models import Verdict
    from apps.reviews.services import DecisionInput, review_decide

    item = hold(key)
    review_decide(
        item_id=item.pk,
        user=alice,
        given=DecisionInput(verdict=Verdict.REJECT, reason_code="duplicate"),
    )
    target = tmp_path / "feedback.jsonl"
    call_command("export_feedback", "--output", str(target))
    records = [json.loads(line) for line in target.read_text().splitlines()]
    assert [r["rationale"]["reason"] for r in records] == ["duplicate"]

    call_command("export_feedback", "--since", "2999-01-01", "--output", str(target))
    assert target.read_text() == ""
    with pytest.raises(CommandError, match="--since: expected a date as YYYY-MM-DD"):
        call_command("export_feedback", "--since", "yesterday")
    with pytest.raises(CommandError, match="--output: cannot write"):
        call_command("export_feedback", "--output", str(tmp_path / "missing" / "x.jsonl"))


def test_decide_page__agent_key__redirected_to_sign_in(book: BookVersion, key: IssuedKey) -> None:
    # Agent keys reach the agent API only: the review pages ask for a signed-in person.
    item = hold(key)
    response = Client().post(
        f"/reviews/{item.pk}/decide",
        {"verdict": "approve", "reason_code": "within-policy"},
        headers={"Authorization": f"Bearer {key.key}"},
    )
    assert response.status_code == 302
    assert "/accounts/login/" in response["Location"]
    item.refresh_from_db()
    assert item.state == State.OPEN
    assert reload(item.action).status == Status.PENDING_REVIEW
