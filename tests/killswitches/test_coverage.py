"""What a switch covers, asked four ways (the gate's filter on switches, the sweep's subquery on
actions, the claim's SQL function and the allow path's SQL), always answers the same; the
fence's key is the same number in Python and in the claim's SQL."""

from __future__ import annotations

import importlib
import re

import pytest
from django.db import connection
from django.db.models.functions import Now

from apps.actions.models import Action
from apps.killswitches.coverage import (
    COVERING_SQL,
    FENCE_KEY,
    covering,
    in_scope,
    switch_engaged_over,
)
from apps.killswitches.models import KillSwitch
from tests.killswitches.conftest import Desk, propose

pytestmark = pytest.mark.django_db

CLAIM_MIGRATION = importlib.import_module("apps.actions.migrations.0006_claim_functions")


def _engage(scope: str, target: str, *, released: bool = False) -> None:
    KillSwitch.objects.create(
        scope=scope,
        target=target,
        reason="test",
        engaged_by="dana",
        engaged_at=Now(),
        released_at=Now() if released else None,
    )


def _claim_look_covers(action: Action) -> bool:
    with connection.cursor() as cursor:
        cursor.execute("SELECT covered FROM actions_claim_look(%s)", [action.pk])
        row = cursor.fetchone()
    assert row is not None
    return bool(row[0])


def _covered_by_sql(workflow: str, agent: str, tool: str) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT EXISTS ({COVERING_SQL})", [workflow, agent, tool])
        row = cursor.fetchone()
    assert row is not None
    return bool(row[0])


def test_fence_key__claim_functions__take_the_same_key() -> None:
    # Given the SQL of the claim's database functions
    keys = re.findall(r"pg_advisory_xact_lock_shared\((\d+)\)", CLAIM_MIGRATION.UP)
    # Then both take the fence, with the key the engage takes
    assert len(keys) == 2
    assert {int(key) for key in keys} == {FENCE_KEY}


@pytest.mark.parametrize(
    ("switches", "covered"),
    [
        pytest.param([], False, id="no switch"),
        pytest.param([("global", "", False)], True, id="global"),
        pytest.param([("global", "", True)], False, id="global released"),
        pytest.param([("workflow", "refunds", False)], True, id="its workflow"),
        pytest.param([("workflow", "claims", False)], False, id="another workflow"),
        pytest.param([("agent", "refund-bot", False)], True, id="its agent"),
        pytest.param([("agent", "other-bot", False)], False, id="another agent"),
        pytest.param([("tool", "issue_refund", False)], True, id="its tool"),
        pytest.param([("tool", "close_ticket", False)], False, id="another tool"),
        pytest.param(
            [("tool", "issue_refund", True), ("agent", "other-bot", False)],
            False,
            id="its tool released, another agent engaged",
        ),
    ],
)
def test_covering__each_scope__filter_subquery_and_claim_agree(
    desk: Desk, switches: list[tuple[str, str, bool]], covered: bool
) -> None:
    # Given a queued refund of refund-bot in refunds, and these switches
    action = propose(desk)
    for scope, target, released in switches:
        _engage(scope, target, released=released)
    # When the three forms of the predicate are asked
    by_filter = KillSwitch.objects.filter(
        covering(workflow="refunds", agent="refund-bot", tool="issue_refund")
    ).exists()
    by_subquery = Action.objects.filter(pk=action.pk).filter(switch_engaged_over()).exists()
    by_claim = _claim_look_covers(action)
    by_sql = _covered_by_sql("refunds", "refund-bot", "issue_refund")
    # Then they agree, and answer as the scopes say
    assert (by_filter, by_subquery, by_claim, by_sql) == (covered, covered, covered, covered)


@pytest.mark.parametrize(
    ("scope", "target", "covered"),
    [
        ("global", "", True),
        ("workflow", "refunds", True),
        ("agent", "refund-bot", True),
        ("tool", "issue_refund", True),
        ("tool", "close_ticket", False),
    ],
)
def test_in_scope__a_switch_and_its_actions__same_answer_as_covering(
    desk: Desk, scope: str, target: str, covered: bool
) -> None:
    # Given a queued refund and a switch of this scope
    action = propose(desk)
    _engage(scope, target)
    # When the actions in the switch's scope are listed
    listed = Action.objects.filter(in_scope(scope, target), pk=action.pk).exists()
    # Then the action is listed exactly when the switch covers it
    assert listed is covered
    assert Action.objects.filter(pk=action.pk).filter(switch_engaged_over()).exists() is covered
