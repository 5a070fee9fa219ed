"""What runs is what was decided: numbers in their canonical form, edits and retries decided
again by the book, approvals bound to the params they saw, and a worker that runs nothing else.

Each test reproduces one way around the gate found on the demo and shows it closed."""

from __future__ import annotations

import json
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.execution import _escalate_failure, action_execute
from apps.actions.gate import action_propose
from apps.actions.models import Action, Status
from apps.actions.states import transition
from apps.books.models import BookVersion
from apps.books.services import book_publish, draft_create, draft_update
from apps.registry.models import Agent, Tool
from apps.registry.services import IssuedKey, agent_key_create
from apps.reviews.models import ReviewDecision, ReviewItem, State, Verdict
from apps.reviews.services import (
    DecisionInput,
    ReviewForbidden,
    ReviewInvalid,
    review_claim,
    review_decide,
)
from tests.actions import tools
from tests.actions.conftest import proposal, proposal_body, propose, refund_params
from tests.announced import Announced
from tests.conftest import PASSWORD
from tests.factories import REFUND_CONTROLS

APPROVE = DecisionInput(verdict=Verdict.APPROVE, reason_code="verified")


def edit(**params: Any) -> DecisionInput:
    return DecisionInput(
        verdict=Verdict.EDIT_APPROVE, reason_code="verified", params=refund_params(**params)
    )


def republish(book: BookVersion, author: User, **changes: Any) -> BookVersion:
    """A new version of the refunds book with `changes` over REFUND_CONTROLS, published."""
    draft = draft_create(workflow=book.workflow, user=author)
    values = {**REFUND_CONTROLS, "escalation_owner_id": author.pk, **changes}
    draft_update(version_id=draft.pk, user=author, values=values)
    return book_publish(version_id=draft.pk, user=author, change_note="changed")


def held(key: IssuedKey, amount_cents: int = 30_000, **changes: Any) -> ReviewItem:
    """A refund the refunds book holds (above its 50.00 EUR review cap): its review item."""
    values: dict[str, Any] = {
        "params": refund_params(amount_cents=amount_cents),
        "confidence": Decimal("0.93"),
    }
    values.update(changes)
    action = action_propose(key=key.record, proposal=proposal(**values)).action
    assert action.status == Status.PENDING_REVIEW, action.reasons
    return ReviewItem.objects.get(action=action)


def reload(action: Action) -> Action:
    return Action.objects.get(pk=action.pk)


def raw_proposal(client: Client, key: str, amount_token: str) -> Any:
    """POST a proposal whose amount is the JSON number text `amount_token`, as sent."""
    body = json.dumps(proposal_body()).replace(
        '"amount_cents": 3000', f'"amount_cents": {amount_token}'
    )
    assert amount_token in body
    return client.post(
        "/api/v1/actions", body, content_type="application/json",
        headers={"Authorization": f"Bearer {key}"},
    )  # fmt: skip


# -- 1. A whole number sent as a float ---------------------------------------------------------


@pytest.mark.parametrize("token", ["100000.0", "1e5", "1.0E+5"])
def test_propose__whole_amount_as_float__decided_and_stored_as_the_integer(
    book: BookVersion, key: IssuedKey, client: Client, token: str
) -> None:
    # Given a book that never allows a refund above 500.00 EUR
    # When the agent sends 1,000.00 EUR as a float
    response = raw_proposal(client, key.key, token)

    # Then the amount cap sees it: denied, and stored as the integer it is
    assert response.status_code == 201, response.content
    assert response.json()["decision"] == "deny"
    assert "issue_refund-never-above-50000" in [r["policy"] for r in response.json()["reasons"]]
    action = Action.objects.get(pk=response.json()["id"])
    assert action.params["amount_cents"] == 100_000
    assert type(action.params["amount_cents"]) is int


@pytest.mark.parametrize(
    ("token", "message"),
    [
        ("100000.5", "must be a whole number"),
        ("1e400", "must be a finite number"),
        ("1180591620717411303424", "must be between"),
        ("2.148045091724575e+16", "must be written as an integer"),
        ('"100000"', "is not of type 'integer'"),
    ],
)
def test_propose__amount_not_a_whole_number__422_names_the_field(
    book: BookVersion, key: IssuedKey, client: Client, token: str, message: str
) -> None:
    # Given the refunds book
    before = Action.objects.count()
    # When the amount is a fraction, not finite, out of range or text
    response = raw_proposal(client, key.key, token)
    # Then the proposal is refused naming the field, and nothing is recorded
    assert response.status_code == 422, response.content
    error = response.json()["errors"][0]
    assert error["field"] == "params.amount_cents"
    assert message in error["message"]
    assert Action.objects.count() == before


def test_propose__integral_float_on_a_raw_cedar_param__held(
    db: Any, user_for: Any, risk_user: User
) -> None:
    # Given access grants longer than 30 days held by a raw Cedar policy
    from apps.demo.world import TOOLS, WORKFLOWS
    from tests.factories import make_agent, make_published_book, make_workflow

    spec = next(tool for tool in TOOLS if tool["slug"] == "grant_access")
    tool = Tool.objects.create(**{**spec, "endpoint_url": "http://127.0.0.1/sandbox/grant"})
    workflow = make_workflow("access-requests", "Access requests")
    book_spec = next(w for w in WORKFLOWS if w["slug"] == "access-requests")["book"]
    make_published_book(
        workflow=workflow,
        author=risk_user,
        values={**book_spec, "tools": [{"tool": "grant_access", "risk_zone": "green"}]},
    )
    agent = make_agent("access-bot", owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    issued = agent_key_create(agent=agent, actor="system:test")
    params = {"employee_id": "E-101", "system": "crm", "role": "viewer", "duration_days": 60.0}

    # When the agent asks for 60 days written as 60.0
    action = action_propose(
        key=issued.record,
        proposal=proposal(
            workflow="access-requests", tool="grant_access", params=params,
            subject="employee:E-101",
        ),
    ).action  # fmt: skip

    # Then the policy sees 60: held for a person, stored as 60
    assert action.status == Status.PENDING_REVIEW
    assert [r["policy"] for r in action.reasons] == ["short-grants-only"]
    assert type(action.params["duration_days"]) is int


# -- 2. Edits and retries are decided again ----------------------------------------------------


@pytest.mark.parametrize("amount_cents", [90_000, 100_000_000])
def test_edit_approve__to_an_amount_the_book_denies__refused_naming_the_policy(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced, amount_cents: int
) -> None:
    # Given a held 300.00 EUR refund
    item = held(key, 30_000)
    # When a supervisor edits it to an amount the book never allows, and approves
    with pytest.raises(ReviewInvalid) as refused:
        review_decide(item_id=item.pk, user=alice, given=edit(amount_cents=amount_cents))
    # Then the edit is refused naming the policy; nothing changed, nothing queued
    assert refused.value.errors[0][0] == "params"
    assert "issue_refund-never-above-50000" in refused.value.errors[0][1]
    action = reload(item.action)
    assert (action.status, action.params["amount_cents"]) == (Status.PENDING_REVIEW, 30_000)
    assert enqueued.ids() == []
    assert not ReviewDecision.objects.filter(item=item).exists()


def test_edit_approve__to_an_amount_the_book_allows__runs_exactly_the_edit(
    book: BookVersion, key: IssuedKey, alice: User, in_process: Tool
) -> None:
    # Given a held 300.00 EUR refund
    item = held(key, 30_000)
    # When a supervisor edits it to 40.00 EUR and approves
    result = review_decide(item_id=item.pk, user=alice, given=edit(amount_cents=4_000))
    assert result.final
    # Then a worker runs it, and the tool receives exactly the edited params
    outcome = action_execute(action_id=item.action.pk)
    assert outcome.status == Status.SUCCEEDED
    assert [call.params for call in tools.REFUNDS] == [refund_params(amount_cents=4_000)]


def test_approve__after_the_book_changed_to_deny__refused(
    book: BookVersion, key: IssuedKey, alice: User, risk_user: User, enqueued: Announced
) -> None:
    # Given a refund held under version 1 (caps 50.00 / 500.00 EUR)
    item = held(key, 30_000)
    # When version 2 lowers the hard cap to 200.00 EUR before a person approves
    republish(book, risk_user, tools=[{**REFUND_CONTROLS["tools"][0], "hard_cap": 20_000}])
    with pytest.raises(ReviewForbidden, match="issue_refund-never-above-20000"):
        review_decide(item_id=item.pk, user=alice, given=APPROVE)
    # Then nothing runs
    assert reload(item.action).status == Status.PENDING_REVIEW
    assert enqueued.ids() == []


def test_approve__after_the_book_changed__decided_and_recorded_under_the_new_version(
    book: BookVersion, key: IssuedKey, alice: User, risk_user: User, enqueued: Announced
) -> None:
    # Given a refund held under version 1
    item = held(key, 30_000)
    # When version 2 is published and a person approves
    v2 = republish(book, risk_user, sla_minutes=45)
    review_decide(item_id=item.pk, user=alice, given=APPROVE)
    # Then the action runs under version 2, which the approval records
    action = reload(item.action)
    assert (action.status, action.book_version_id) == (Status.QUEUED, v2.pk)
    assert ReviewDecision.objects.get(item=item).book_version_id == v2.pk


def failed_with_fallback(key: IssuedKey) -> ReviewItem:
    """An allowed 30.00 EUR refund that failed at its system of record: its fallback item."""
    action = action_propose(key=key.record, proposal=proposal()).action
    assert action.status == Status.QUEUED
    transition(action, Status.RUNNING, actor="system:worker")
    _escalate_failure(action, "the system of record answered 500")
    return ReviewItem.objects.get(action=action, kind="fallback")


def test_fallback_retry__edited_to_a_denied_amount__refused(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced
) -> None:
    # Given a refund that failed and waits for its escalation owner
    item = failed_with_fallback(key)
    enqueued.clear()
    # When a person runs it again with an amount the book never allows
    with pytest.raises(ReviewInvalid, match="issue_refund-never-above-50000"):
        review_decide(item_id=item.pk, user=alice, given=edit(amount_cents=900_000))
    # Then no new action exists and nothing is queued
    assert Action.objects.count() == 1
    assert enqueued.ids() == []


def test_fallback_retry__run_again__decided_by_the_active_book(
    book: BookVersion, key: IssuedKey, alice: User, risk_user: User, enqueued: Announced
) -> None:
    # Given a failed refund, and a book that now denies refunds above 20.00 EUR
    item = failed_with_fallback(key)
    enqueued.clear()
    republish(
        book,
        risk_user,
        tools=[{**REFUND_CONTROLS["tools"][0], "auto_cap": 1_000, "hard_cap": 2_000}],
    )
    # When a person approves running it again
    with pytest.raises(ReviewForbidden, match="issue_refund-never-above-2000"):
        review_decide(item_id=item.pk, user=alice, given=APPROVE)
    # Then it is refused: the retry would not be decided
    assert Action.objects.count() == 1
    assert enqueued.ids() == []


# -- 3. The red zone: two people who saw the params that run ---------------------------------


@pytest.fixture
def red_book(book: BookVersion, risk_user: User) -> BookVersion:
    return republish(book, risk_user, tools=[{**REFUND_CONTROLS["tools"][0], "risk_zone": "red"}])


def test_red_zone__second_approver_edits_the_subject__approvals_start_again(
    red_book: BookVersion, key: IssuedKey, alice: User, frank: User, enqueued: Announced
) -> None:
    # Given a red-zone refund of order 1042 that alice approved
    item = held(key, 3_000)
    assert review_decide(item_id=item.pk, user=alice, given=APPROVE).final is False

    # When frank edits it to order 1043 and approves
    second = review_decide(
        item_id=item.pk, user=frank, given=edit(order_id="1043", amount_cents=3_000)
    )

    # Then frank's approval is the first of the new params: nothing runs yet, and the item
    # names the subject that would run
    assert second.final is False
    assert "Approval 1 of 2" in second.messages[0]
    action = reload(item.action)
    assert action.status == Status.PENDING_REVIEW
    assert (action.params["order_id"], action.subject) == ("1043", "order:1043")
    assert enqueued.ids() == []
    with pytest.raises(ReviewForbidden, match="already approved these params"):
        review_decide(item_id=item.pk, user=frank, given=APPROVE)

    # And when alice, who now sees order 1043, approves, it runs with those params
    third = review_decide(item_id=item.pk, user=alice, given=APPROVE)
    assert third.final
    action = reload(item.action)
    assert action.status == Status.QUEUED
    assert action.params["order_id"] == "1043"


def test_red_zone__an_expired_first_approval__no_longer_counts(
    red_book: BookVersion, key: IssuedKey, alice: User, frank: User, enqueued: Announced
) -> None:
    # Given a red-zone item alice approved, her approval since expired
    item = held(key, 3_000)
    review_decide(item_id=item.pk, user=alice, given=APPROVE)
    ReviewDecision.objects.filter(item=item).update(expires_at=timezone.now() - timedelta(1))
    # When frank approves
    result = review_decide(item_id=item.pk, user=frank, given=APPROVE)
    # Then his is the only approval that counts: one more person must approve
    assert result.final is False
    assert enqueued.ids() == []


# -- 4. The worker runs what was decided, while the approval holds ---------------------------


def test_execute__params_changed_after_the_decision__nothing_runs(
    book: BookVersion, key: IssuedKey, in_process: Tool, enqueued: Announced
) -> None:
    # Given an allowed 30.00 EUR refund, queued
    action = action_propose(key=key.record, proposal=proposal()).action
    assert action.status == Status.QUEUED
    # When its params are changed behind the gate's back (a side door into the database)
    Action.objects.filter(pk=action.pk).update(params=refund_params(amount_cents=900_000))
    outcome = action_execute(action_id=action.pk)
    # Then the worker calls nothing and hands it to the escalation owner
    assert outcome.status == Status.FAILED
    assert tools.REFUNDS == []
    assert "not those the Decision Book decided" in reload(action).error
    assert ReviewItem.objects.filter(action=action, kind="fallback", state=State.OPEN).exists()


def test_execute__approval_expired_before_the_run__nothing_runs(
    book: BookVersion, key: IssuedKey, alice: User, in_process: Tool, enqueued: Announced
) -> None:
    # Given a held refund approved and queued, whose approval expired before a worker took it
    item = held(key, 30_000)
    review_decide(item_id=item.pk, user=alice, given=APPROVE)
    action = reload(item.action)
    assert action.approval_expires_at is not None
    assert action.params_digest
    Action.objects.filter(pk=action.pk).update(
        approval_expires_at=timezone.now() - timedelta(seconds=1)
    )
    # When the worker takes it
    outcome = action_execute(action_id=action.pk)
    # Then nothing is called; a person may approve it again
    assert outcome.status == Status.FAILED
    assert tools.REFUNDS == []
    assert "approval expired" in reload(action).error


def test_approval__records_digest_version_and_expiry(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced, settings: Any
) -> None:
    # Given approvals that hold for 15 minutes
    settings.REVIEW_APPROVAL_TTL_MINUTES = 15
    item = held(key, 30_000)
    # When alice approves
    before = timezone.now()
    review_decide(item_id=item.pk, user=alice, given=APPROVE)
    # Then her approval names the params, the version and when it ends; so does the action
    decision = ReviewDecision.objects.get(item=item)
    action = reload(item.action)
    assert decision.params_digest == action.params_digest
    assert decision.book_version_id == book.pk
    assert decision.expires_at is not None
    assert timedelta(minutes=14) < decision.expires_at - before <= timedelta(minutes=15, seconds=5)
    assert action.approval_expires_at == decision.expires_at


# -- 5. Smaller doors ----------------------------------------------------------------------------


def test_propose__amount_in_another_currency__held_not_allowed(
    book: BookVersion, key: IssuedKey
) -> None:
    # Given caps of 50.00 / 500.00 EUR
    # When the agent proposes 4,900 KWD written as 4900 minor units (under the EUR cap)
    action = action_propose(
        key=key.record, proposal=proposal(params=refund_params(amount_cents=4_900, currency="KWD"))
    ).action
    # Then a person decides it: the caps are in EUR
    assert action.status == Status.PENDING_REVIEW
    assert "currency-eur-only" in [reason["policy"] for reason in action.reasons]


def test_propose__replayed_key_from_another_workflow__scope_checked_first(
    book: BookVersion, agent: Agent, key: IssuedKey, payments: Any, client: Client
) -> None:
    # Given an action in payments proposed under idempotency key K by refund-bot
    body = proposal_body(workflow="payments", idempotency_key="K")
    first = propose(client, key.key, body)
    assert first.status_code == 201
    # When a key of refund-bot scoped to refunds replays K in payments
    scoped = agent_key_create(agent=agent, actor="system:test", workflows=[book.workflow])
    replay = propose(client, scoped.key, body)
    # Then it is refused for its scope; the earlier action is not shown
    assert replay.status_code == 403
    assert replay.json()["errors"][0]["field"] == "workflow"
    assert first.json()["id"] not in replay.content.decode()


def test_claim__by_the_agents_owner__refused(
    book: BookVersion, key: IssuedKey, agent: Agent
) -> None:
    # Given a held refund of refund-bot, whose owner also has the supervisor role
    item = held(key, 30_000)
    owner = agent.owner
    # When the owner claims it
    with pytest.raises(ReviewForbidden, match="You own refund-bot"):
        review_claim(item_id=item.pk, user=owner)
    # Then the item stays free for other supervisors
    item.refresh_from_db()
    assert item.claimed_by_id is None


def test_edit_form__shows_and_reads_major_units__unchanged_submit_changes_nothing(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced
) -> None:
    # Given a held 300.00 EUR refund stored, as before params were normalized, as a float
    item = held(key, 30_000)
    Action.objects.filter(pk=item.action_id).update(params=refund_params(amount_cents=30_000.0))
    client = Client()
    assert client.login(username=alice.get_username(), password=PASSWORD)
    page = client.get(f"/reviews/{item.pk}/").content.decode()
    assert 'value="300.00"' in page

    # When alice submits the edit form as shown
    response = client.post(
        f"/reviews/{item.pk}/decide",
        {
            "verdict": "edit_approve", "reason_code": "verified", "param.order_id": "1042",
            "param.amount_cents": "300.00", "param.currency": "EUR", "param.reason": "damaged",
        },
    )  # fmt: skip

    # Then the refund runs at 300.00 EUR (30000 cents), not 100 times that
    assert response.status_code == 302  # back to the item, decided
    assert reload(item.action).params["amount_cents"] == 30_000


@pytest.mark.parametrize(
    ("typed", "message"),
    [("1e9999", "must be at most"), ("NaN", "must be an amount"), ("12.345", "at most 2 decimals")],
)
def test_edit_form__out_of_range_amount__form_error_not_500(
    book: BookVersion, key: IssuedKey, alice: User, enqueued: Announced, typed: str, message: str
) -> None:
    # Given a held refund
    item = held(key, 30_000)
    client = Client()
    assert client.login(username=alice.get_username(), password=PASSWORD)
    # When the amount typed is out of range or not an amount
    response = client.post(
        f"/reviews/{item.pk}/decide",
        {"verdict": "edit_approve", "reason_code": "verified", "param.amount_cents": typed},
    )
    # Then the form says so next to the field, and nothing changed
    assert response.status_code == 422
    assert message in response.content.decode()
    assert reload(item.action).params["amount_cents"] == 30_000
    assert enqueued.ids() == []


def test_red_zone__approve_from_a_page_opened_before_an_edit__refused(
    red_book: BookVersion, key: IssuedKey, alice: User, frank: User, enqueued: Announced
) -> None:
    # Given alice has the item of a red-zone refund of order 1042 open
    item = held(key, 3_000)
    client = Client()
    assert client.login(username=alice.get_username(), password=PASSWORD)
    page = client.get(f"/reviews/{item.pk}/").content.decode()
    seen = page.split('name="params_digest" value="')[1].split('"')[0]

    # When frank edits it to order 1043 meanwhile, and alice approves from her page
    review_decide(item_id=item.pk, user=frank, given=edit(order_id="1043", amount_cents=3_000))
    response = client.post(
        f"/reviews/{item.pk}/decide",
        {"verdict": "approve", "reason_code": "verified", "params_digest": seen},
    )

    # Then her approval is refused: she never saw order 1043
    assert response.status_code == 409
    assert "changed since you opened it" in response.content.decode()
    assert ReviewDecision.objects.filter(item=item, user=alice).count() == 0
    # And the page now shows the params that would run, with their digest
    page = client.get(f"/reviews/{item.pk}/").content.decode()
    assert "order:1043" in page
    assert seen not in page


def test_red_zone__page_after_an_edit__first_approver_may_approve_the_new_params(
    red_book: BookVersion, key: IssuedKey, alice: User, frank: User, enqueued: Announced
) -> None:
    # Given a red-zone refund alice approved, then frank edited to order 1043
    item = held(key, 3_000)
    review_decide(item_id=item.pk, user=alice, given=APPROVE)
    review_decide(item_id=item.pk, user=frank, given=edit(order_id="1043", amount_cents=3_000))
    client = Client()
    assert client.login(username=alice.get_username(), password=PASSWORD)
    # When alice opens the item
    page = client.get(f"/reviews/{item.pk}/").content.decode()
    # Then her approval of the earlier params is shown as no longer counting, and she may
    # approve the params that would run
    assert 'data-testid="approval-of-earlier-params"' in page
    assert 'data-testid="second-approver"' not in page
    assert 'id="decision-form"' in page
    assert 'value="1043"' in page
