"""The gate's decisions, through POST /api/v1/actions: allow, hold, deny and observe from the
refunds book; blocked by a kill switch at any scope; denied without a book; held when the tool's
circuit is open. Each recorded action is audited in the same chain, and the action, its decision
and its audit events commit together or not at all."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone

from apps.actions.gate import action_propose
from apps.actions.models import Action, Decision, Status, ToolCircuit
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.books.models import BookVersion
from apps.killswitches.models import KillSwitch, Scope
from apps.registry.models import Tool, Workflow
from apps.registry.services import IssuedKey
from tests.actions.conftest import (
    CaptureCallbacks,
    proposal,
    proposal_body,
    propose,
    refund_params,
    verbs_of,
)
from tests.announced import Announced
from tests.factories import REFUND_CONTROLS, make_published_book

pytestmark = pytest.mark.django_db

MAY_RUN = {
    "policy": "issue_refund-may-run",
    "message": "issue_refund (yellow zone) may run without review within its limits",
}
REVIEW_ABOVE_5000 = {
    "policy": "issue_refund-review-above-5000",
    "message": "issue_refund above 50.00 EUR needs a person",
}
NEVER_ABOVE_50000 = {
    "policy": "issue_refund-never-above-50000",
    "message": "issue_refund above 500.00 EUR is never allowed",
}


def assert_audited(action_id: object, *statuses: str) -> None:
    """The action's events are `action.proposed` then one per status, in an intact chain."""
    assert verbs_of(action_id) == ["action.proposed", *(f"action.{s}" for s in statuses)]
    report = audit_verify()
    assert report.intact, report.problem


def engage(scope: str, target: str = "", *, released: bool = False) -> KillSwitch:
    now = timezone.now()
    return KillSwitch.objects.create(
        scope=scope,
        target=target,
        reason="refund fraud spike",
        engaged_by="dana",
        engaged_at=now - timedelta(minutes=5),
        released_by="dana" if released else "",
        released_at=now if released else None,
    )


# --- the book decides -------------------------------------------------------------------------


def test_propose__within_auto_cap__201_allowed_and_queued(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    enqueued: Announced,
) -> None:
    # Given the refunds book (yellow zone, autonomous, review above 50.00 EUR)
    # When refund-bot proposes a refund of 30.00 EUR
    response = propose(client, key.key, proposal_body(idempotency_key="refund-1042"))
    # Then it is allowed and queued, spot-checked because yellow-zone tools run autonomously
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == Status.QUEUED
    assert body["decision"] == Decision.ALLOW
    assert body["reasons"] == [MAY_RUN]
    assert body["book_version"] == 1
    assert body["spot_check"] is True
    assert (body["workflow"], body["tool"], body["subject"]) == (
        "refunds",
        "issue_refund",
        "order:1042",
    )
    assert body["queued_at"] is not None
    # And the workers hear of it once, when its transaction has committed
    assert enqueued.ids() == [body["id"]]
    # And what was proposed is stored as sent, with the version that governed it
    action = Action.objects.get(pk=body["id"])
    assert action.book_version == book
    assert action.params == refund_params()
    assert str(action.confidence) == "0.9300"
    assert action.idempotency_key == "refund-1042"
    assert action.trace_id == "trace-1"
    assert action.key_id == key.record.pk
    assert_audited(action.pk, Status.APPROVED, Status.QUEUED)


def test_propose__above_auto_cap__201_held_for_review(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    # When refund-bot proposes 60.00 EUR, above the 50.00 review cap
    with django_capture_on_commit_callbacks() as callbacks:
        response = propose(client, key.key, proposal_body(params=refund_params(amount_cents=6000)))
    # Then a person decides, and the control that held it is named
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["decision"]) == (Status.PENDING_REVIEW, Decision.HOLD)
    assert body["reasons"] == [REVIEW_ABOVE_5000]
    assert body["book_version"] == 1
    assert body["queued_at"] is None
    assert callbacks == []
    assert_audited(body["id"], Status.PENDING_REVIEW)


def test_propose__low_confidence__held_naming_threshold(
    client: Client, key: IssuedKey, book: BookVersion
) -> None:
    response = propose(client, key.key, proposal_body(confidence=0.5))
    body = response.json()
    assert (body["status"], body["decision"]) == (Status.PENDING_REVIEW, Decision.HOLD)
    assert [reason["policy"] for reason in body["reasons"]] == ["confidence-threshold"]


def test_propose__above_hard_cap__201_denied_with_message(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    # When refund-bot proposes 600.00 EUR, above the 500.00 hard cap
    with django_capture_on_commit_callbacks() as callbacks:
        response = propose(client, key.key, proposal_body(params=refund_params(amount_cents=60000)))
    # Then it is denied, naming the cap and its message
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["decision"]) == (Status.DENIED, Decision.DENY)
    assert body["reasons"] == [NEVER_ABOVE_50000]
    assert callbacks == []
    assert_audited(body["id"], Status.DENIED)


def test_propose__book_in_observe_mode__observed_never_queued(
    client: Client,
    key: IssuedKey,
    refunds: Workflow,
    refund_tool: Tool,
    risk_user: User,
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    # Given the refunds book in observe (shadow) mode
    make_published_book(
        workflow=refunds, author=risk_user, values={**REFUND_CONTROLS, "autonomy_mode": "observe"}
    )
    # When refund-bot proposes what the policy would allow
    with django_capture_on_commit_callbacks() as callbacks:
        response = propose(client, key.key, proposal_body())
    # Then the decision is logged as observed and nothing is ever handed to a worker
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["decision"]) == (Status.OBSERVED, Decision.OBSERVE)
    assert body["reasons"][0] == {
        "policy": "autonomy-observe",
        "message": "Observe mode: decisions are logged, nothing is executed",
    }
    assert MAY_RUN in body["reasons"]
    assert body["queued_at"] is None
    assert callbacks == []
    assert_audited(body["id"], Status.OBSERVED)


def test_propose__no_published_book__denied_no_active_book(
    client: Client, key: IssuedKey, refunds: Workflow
) -> None:
    # Given the refunds workflow has no published book (only a draft, say)
    # When refund-bot proposes
    response = propose(client, key.key, proposal_body())
    # Then it is denied, saying so; no book version governed it
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["decision"]) == (Status.DENIED, Decision.DENY)
    assert body["reasons"] == [
        {"policy": "no-active-book", "message": "Workflow refunds has no published Decision Book"}
    ]
    assert body["book_version"] is None
    assert_audited(body["id"], Status.DENIED)


# --- kill switches ----------------------------------------------------------------------------

SCOPES = [
    pytest.param(Scope.GLOBAL, "", id="global"),
    pytest.param(Scope.WORKFLOW, "refunds", id="workflow"),
    pytest.param(Scope.AGENT, "refund-bot", id="agent"),
    pytest.param(Scope.TOOL, "issue_refund", id="tool"),
]


@pytest.mark.parametrize(("scope", "target"), SCOPES)
def test_propose__engaged_kill_switch__blocked_naming_scope_and_reason(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    scope: str,
    target: str,
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    # Given a switch engaged at this scope, covering refund-bot's refunds
    engage(scope, target)
    # When refund-bot proposes what the book would allow
    with django_capture_on_commit_callbacks() as callbacks:
        response = propose(client, key.key, proposal_body())
    # Then it is recorded as blocked, naming the switch and on-call's reason, and never queued
    assert response.status_code == 201
    body = response.json()
    assert body["status"] == Status.BLOCKED
    assert body["reasons"] == [
        {"policy": f"kill-switch:{scope}", "message": "Stopped by on-call: refund fraud spike"}
    ]
    assert body["queued_at"] is None
    assert callbacks == []
    assert_audited(body["id"], Status.BLOCKED)


@pytest.mark.parametrize(("scope", "target"), SCOPES)
def test_propose__released_kill_switch__not_blocked(
    client: Client, key: IssuedKey, book: BookVersion, scope: str, target: str
) -> None:
    # Given a switch at this scope that was engaged and then released
    engage(scope, target, released=True)
    # When refund-bot proposes
    response = propose(client, key.key, proposal_body())
    # Then it goes through as if the switch had never been
    assert response.json()["status"] == Status.QUEUED


@pytest.mark.parametrize(
    ("scope", "target"),
    [
        pytest.param(Scope.WORKFLOW, "payments", id="workflow"),
        pytest.param(Scope.AGENT, "invoice-bot", id="agent"),
        pytest.param(Scope.TOOL, "send_email", id="tool"),
    ],
)
def test_propose__kill_switch_elsewhere__not_blocked(
    client: Client, key: IssuedKey, book: BookVersion, scope: str, target: str
) -> None:
    engage(scope, target)
    response = propose(client, key.key, proposal_body())
    assert response.json()["status"] == Status.QUEUED


def test_propose__two_switches__blocked_naming_both(
    client: Client, key: IssuedKey, book: BookVersion
) -> None:
    engage(Scope.GLOBAL)
    engage(Scope.TOOL, "issue_refund")
    response = propose(client, key.key, proposal_body())
    assert response.json()["status"] == Status.BLOCKED
    assert sorted(reason["policy"] for reason in response.json()["reasons"]) == [
        "kill-switch:global",
        "kill-switch:tool",
    ]


# --- the tool's circuit -----------------------------------------------------------------------


def test_propose__circuit_open__held_for_escalation_owner(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    refund_tool: Tool,
    risk_user: User,
    django_capture_on_commit_callbacks: CaptureCallbacks,
) -> None:
    # Given issue_refund's circuit is open after failures downstream
    ToolCircuit.objects.create(
        tool=refund_tool,
        state=ToolCircuit.State.OPEN,
        consecutive_failures=5,
        opened_at=timezone.now(),
        last_error="system of record answered 503",
    )
    # When refund-bot proposes what the book allows
    with django_capture_on_commit_callbacks() as callbacks:
        response = propose(client, key.key, proposal_body())
    # Then it is not queued against a broken system but held for the book's escalation owner
    assert response.status_code == 201
    body = response.json()
    assert (body["status"], body["decision"]) == (Status.PENDING_REVIEW, Decision.HOLD)
    assert body["reasons"] == [
        {
            "policy": "circuit-open",
            "message": "issue_refund is failing: system of record answered 503",
        }
    ]
    assert callbacks == []
    action = Action.objects.get(pk=body["id"])
    assert action.escalated_to == risk_user == book.escalation_owner
    assert_audited(action.pk, Status.PENDING_REVIEW)


@pytest.mark.parametrize("state", [ToolCircuit.State.CLOSED, ToolCircuit.State.HALF_OPEN])
def test_propose__circuit_not_open__allowed(
    client: Client, key: IssuedKey, book: BookVersion, refund_tool: Tool, state: str
) -> None:
    ToolCircuit.objects.create(tool=refund_tool, state=state)
    response = propose(client, key.key, proposal_body())
    assert response.json()["status"] == Status.QUEUED


# --- one transaction --------------------------------------------------------------------------


@pytest.fixture
def failing_audit(monkeypatch: pytest.MonkeyPatch) -> Callable[[int | None], None]:
    """fail_on(n): from now on, the n-th audit write of the gate (and of the state machine under
    it) raises; fail_on(None): they all work again."""
    from apps.audit import services

    failing_at: list[int | None] = [None]
    calls: list[str] = []

    def audit_record(**kwargs: Any) -> AuditEvent | None:
        calls.append(kwargs["verb"])
        if len(calls) == failing_at[0]:
            raise RuntimeError(f"audit write {kwargs['verb']} failed")
        return services.audit_record(**kwargs)

    def fail_on(call: int | None) -> None:
        failing_at[0] = call
        calls.clear()

    # The state machine (states.py) writes action.proposed and every status change.
    monkeypatch.setattr("apps.actions.states.audit_record", audit_record)
    return fail_on


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "failing_call",
    [
        pytest.param(1, id="proposed"),
        pytest.param(2, id="approved"),
        pytest.param(3, id="queued"),
    ],
)
def test_propose__audit_write_fails__nothing_recorded_nothing_queued(
    key: IssuedKey,
    book: BookVersion,
    enqueued: Announced,
    failing_audit: Callable[[int | None], None],
    failing_call: int,
) -> None:
    # Given the n-th audit write of an allowed proposal fails (real commits: no test transaction)
    failing_audit(failing_call)
    actions, events = Action.objects.count(), AuditEvent.objects.count()
    # When refund-bot proposes
    with pytest.raises(RuntimeError, match="audit write"):
        action_propose(key=key.record, proposal=proposal(idempotency_key="refund-1042"))
    # Then neither the action, its decision nor any of its audit events remain, nothing was
    # handed to a worker, and the chain is intact
    assert Action.objects.count() == actions == 0
    assert AuditEvent.objects.count() == events
    assert enqueued.ids() == []
    assert audit_verify().intact
    # And the same proposal, once the audit works again, is recorded afresh (the key is free)
    failing_audit(None)
    result = action_propose(key=key.record, proposal=proposal(idempotency_key="refund-1042"))
    assert result.created
    assert result.action.status == Status.QUEUED
