"""Backtests on crafted actions: the counts of each side, a flip in each direction, the limit,
reviewer hours; the same decisions as the gate's `book_decide`; the htmx panel."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.books.compilation import action_facts, book_decide
from apps.books.policy.engine import native_inputs
from apps.books.services import draft_create, draft_update
from apps.ledger import backtest as backtest_module
from apps.ledger.backtest import (
    Decider,
    backtest_part_perform,
    backtest_perform,
    backtest_request,
    facts_of,
)
from apps.ledger.models import Backtest, BacktestPart
from apps.registry.models import Workflow
from tests.factories import REFUND_CONTROLS
from tests.ledger.conftest import World, add_action

pytestmark = pytest.mark.django_db

WEDNESDAY = datetime(2025, 3, 5, 10, tzinfo=UTC)
# (amount, confidence) -> (active v1, draft): v1 runs up to 50.00 on its own at confidence 0.8,
# never above 500.00; the draft only up to 20.00, but at confidence 0.5, and up to 1,000.00.
CASES = [
    (1000, "0.9", "allow", "allow"),
    (3000, "0.9", "allow", "hold"),  # allow -> hold
    (1000, "0.6", "hold", "allow"),  # hold -> allow
    (70000, "0.9", "deny", "hold"),  # deny -> hold
    (6000, "0.9", "hold", "hold"),
]
DRAFT = {
    **REFUND_CONTROLS,
    "tools": [
        {"tool": "issue_refund", "risk_zone": "yellow", "auto_cap": 2000, "hard_cap": 100000}
    ],
    "confidence_threshold": Decimal("0.5"),
}


def _draft(world: World, workflow: Workflow) -> Any:
    draft = draft_create(workflow=workflow, user=world.risk)
    return draft_update(
        version_id=draft.pk, user=world.risk, values={**DRAFT, "escalation_owner_id": world.risk.pk}
    )


def _actions(world: World) -> list[Action]:
    return [
        add_action(
            world,
            workflow=world.refunds,
            status="succeeded",
            decision=active,
            at=WEDNESDAY + timedelta(minutes=index),
            amount=amount,
            confidence=confidence,
        )
        for index, (amount, confidence, active, _) in enumerate(CASES)
    ]


def test_backtest__crafted_actions__counts_and_flips_both_ways(world: World) -> None:
    # Given five recorded refunds and a draft that moves the limits both ways
    actions = _actions(world)
    draft = _draft(world, world.refunds)
    # When risk backtests the draft against the last 100 actions
    backtest = backtest_request(workflow=world.refunds, draft=draft, user=world.risk, limit=100)
    done = backtest_perform(backtest_id=backtest.pk)
    # Then the counts of both sides are those of the crafted cases
    assert done.state == Backtest.State.DONE
    result = done.result
    assert result is not None
    assert result["total"] == 5
    assert result["counts"]["active"] == {"allow": 2, "hold": 2, "deny": 1, "observe": 0}
    assert result["counts"]["draft"] == {"allow": 2, "hold": 3, "deny": 0, "observe": 0}
    # And the flips are listed, one in each direction, newest first
    assert result["moves"] == {"allow->hold": 1, "deny->hold": 1, "hold->allow": 1}
    assert result["flip_total"] == 3
    flips = {(flip["id"], flip["active"], flip["draft"]) for flip in result["flipped"]}
    assert flips == {
        (str(actions[1].pk), "allow", "hold"),
        (str(actions[2].pk), "hold", "allow"),
        (str(actions[3].pk), "deny", "hold"),
    }
    assert [flip["id"] for flip in result["flipped"]] == [
        str(actions[3].pk),
        str(actions[2].pk),
        str(actions[1].pk),
    ]
    # And with no review history, each hold costs the draft's baseline (7.50 minutes, from v1)
    assert result["reviewer_hours"] == {"active": "0.25", "draft": "0.38", "change": "0.13"}


def test_backtest__limit__decides_only_the_newest(world: World) -> None:
    _actions(world)
    draft = _draft(world, world.refunds)
    backtest = backtest_request(workflow=world.refunds, draft=draft, user=world.risk, limit=2)
    result = backtest_perform(backtest_id=backtest.pk).result
    assert result is not None
    # the two newest: 70000 (deny -> hold) and 6000 (hold -> hold)
    assert result["total"] == 2
    assert result["moves"] == {"deny->hold": 1}


@pytest.mark.parametrize("part_size", [1, 2, 4])
def test_backtest__in_parts__same_result_as_whole(
    world: World, part_size: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the crafted actions, plus two at the same instant (parts are cut on (time, id))
    actions = _actions(world)
    for amount in (1000, 3000):
        add_action(
            world, workflow=world.refunds, status="succeeded", decision="allow",
            at=WEDNESDAY + timedelta(minutes=10), amount=amount,
        )  # fmt: skip
    draft = _draft(world, world.refunds)
    whole = backtest_perform(
        backtest_id=backtest_request(
            workflow=world.refunds, draft=draft, user=world.risk, limit=100
        ).pk
    ).result
    # When the same backtest runs in parts of 1, 2 or 4 actions
    monkeypatch.setattr(backtest_module, "PART_SIZE", part_size)
    backtest = backtest_request(workflow=world.refunds, draft=draft, user=world.risk, limit=6)
    done = backtest_perform(backtest_id=backtest.pk)
    # Then it decides the six newest once each, with the counts, flips and order of one pass
    assert done.state == Backtest.State.DONE
    assert done.parts == -(-6 // part_size)
    result = done.result
    assert whole is not None
    assert result is not None
    assert whole["total"] == 7
    assert result["total"] == 6 == done.done
    assert sum(result["counts"]["active"].values()) == 6
    oldest = str(actions[0].pk)
    assert [flip["id"] for flip in result["flipped"]] == [
        flip["id"] for flip in whole["flipped"] if flip["id"] != oldest
    ]
    assert result["moves"] == whole["moves"]
    assert not BacktestPart.objects.filter(backtest=backtest).exists()  # merged, then gone


@pytest.fixture
def parted(
    world: World, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> tuple[Backtest, list[BacktestPart]]:
    """A backtest of the five crafted actions cut into parts of 2, none of them sent yet."""
    _actions(world)
    monkeypatch.setattr(backtest_module, "PART_SIZE", 2)
    backtest = backtest_request(
        workflow=world.refunds, draft=_draft(world, world.refunds), user=world.risk, limit=100
    )
    # The parts are sent to the workers after the commit; here nothing is sent
    with django_capture_on_commit_callbacks(execute=False):
        backtest_perform(backtest_id=backtest.pk, on_workers=True)
    parts = list(BacktestPart.objects.filter(backtest=backtest).order_by("index"))
    return backtest, parts


def test_backtest__part_delivered_twice__recorded_once(
    parted: tuple[Backtest, list[BacktestPart]],
) -> None:
    backtest, parts = parted
    assert [part.size for part in parts] == [2, 2, 1]

    backtest_part_perform(part_id=parts[0].pk)
    backtest_part_perform(part_id=parts[0].pk)  # redelivered

    backtest.refresh_from_db()
    assert (backtest.state, backtest.parts_done, backtest.done, backtest.percent) == (
        Backtest.State.RUNNING, 1, 2, 40,
    )  # fmt: skip
    for part in parts[1:]:
        backtest_part_perform(part_id=part.pk)
    backtest.refresh_from_db()
    assert backtest.state == Backtest.State.DONE
    assert backtest.result is not None
    assert backtest.result["total"] == 5
    assert backtest.result["flip_total"] == 3


def test_backtest__started_over__parts_of_the_earlier_run_do_nothing(
    parted: tuple[Backtest, list[BacktestPart]],
) -> None:
    backtest, parts = parted
    earlier = [part.pk for part in parts]
    # The run's task is delivered again (its worker died): the backtest starts over
    done = backtest_perform(backtest_id=backtest.pk)
    assert done.state == Backtest.State.DONE
    result = done.result
    # A late message of the earlier run finds its part gone and changes nothing
    for part_id in earlier:
        backtest_part_perform(part_id=part_id)
    done.refresh_from_db()
    assert done.result == result
    assert done.done == 5


def test_backtest__part_fails__backtest_failed_with_the_cause(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    _actions(world)
    monkeypatch.setattr(backtest_module, "PART_SIZE", 2)
    backtest = backtest_request(
        workflow=world.refunds, draft=_draft(world, world.refunds), user=world.risk, limit=100
    )
    monkeypatch.setattr(backtest_module, "facts_of", _broken_facts)

    done = backtest_perform(backtest_id=backtest.pk)

    assert done.state == Backtest.State.FAILED
    assert "facts could not be read" in done.error
    assert done.finished_at is not None


def _broken_facts(**_: Any) -> Any:
    raise ValueError("facts could not be read")


def test_backtest__decider__agrees_with_book_decide(world: World) -> None:
    # The backtest's decisions are the gate's: for v1 and the draft, on every crafted case
    draft = _draft(world, world.refunds)
    for version in (world.books["refunds"], draft):
        decider = Decider(version)
        for amount, confidence, _, _ in CASES:
            params = {"order_id": "1", "amount_cents": amount, "currency": "EUR", "reason": "x"}
            gate = book_decide(
                version,
                action_facts(
                    version=version, agent=world.agent, tool=world.tool, params=params,
                    confidence=Decimal(confidence), at=WEDNESDAY, subject="order:1",
                ),
            )  # fmt: skip
            facts = facts_of(
                workflow="refunds",
                agent=("refund-bot", "low", ("invoices", "refunds")),
                tool=world.tool,
                zone=decider.zone(world.tool),
                currency=version.currency,
                params=params,
                confidence=Decimal(confidence),
                subject="order:1",
                at=WEDNESDAY,
            )
            assert decider.compiled is not None
            shared = native_inputs(facts, decider.compiled.param_types)
            assert decider.decide(facts) == gate.decision
            # ... also on the evaluator's inputs built once for both versions
            assert decider.decide(facts, shared) == gate.decision
            assert decider.reason(facts) == gate.reasons[0].policy_id


def test_backtest_panel__risk_starts_and_polls__sees_flips(world: World, client_for: Any) -> None:
    actions = _actions(world)
    _draft(world, world.refunds)
    client = client_for(Role.RISK)
    # The editor carries the panel
    editor = client.get("/books/refunds/draft/").content.decode()
    assert 'id="backtest-panel"' in editor
    # When bob starts a backtest
    started = client.post(
        "/ledger/backtests/refunds/", {"backtest-limit": "50"}, headers={"HX-Request": "true"}
    )
    assert started.status_code == 200
    backtest = Backtest.objects.get()
    assert backtest.limit == 50
    assert "backtest-progress" in started.content.decode()
    # When the worker has run it, the poll shows the flips with links to each action
    backtest_perform(backtest_id=backtest.pk)
    polled = client.get(f"/ledger/backtests/refunds/{backtest.pk}/", headers={"HX-Request": "true"})
    html = polled.content.decode()
    assert 'id="backtest-flips"' in html
    assert f"/audit/flight-recorder/?action={actions[2].pk}" in html
    assert "hx-trigger" not in html  # finished: polling stops


def test_backtest_panel__bad_limit__422_naming_the_field(world: World, client_for: Any) -> None:
    _draft(world, world.refunds)
    response = client_for(Role.RISK).post("/ledger/backtests/refunds/", {"backtest-limit": "0"})
    assert response.status_code == 422
    assert "limit:" in response.content.decode()
    assert not Backtest.objects.exists()


def test_backtest_panel__no_draft__422_says_so(world: World, client_for: Any) -> None:
    response = client_for(Role.RISK).post("/ledger/backtests/refunds/", {"backtest-limit": "10"})
    assert response.status_code == 422
    assert "refunds has no draft to backtest" in response.content.decode()


def test_backtest_panel__finance__refused(world: World, client_for: Any) -> None:
    assert (
        client_for(Role.FINANCE)
        .post("/ledger/backtests/refunds/", {"backtest-limit": "10"})
        .status_code
        == 403
    )
