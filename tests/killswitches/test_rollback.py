"""Rolling back the last N succeeded actions of an agent or workflow: newest first, through
each tool's undo, irreversible ones listed for remediation by hand, progress recorded."""

from __future__ import annotations

from typing import Any

import pytest

from apps.actions.models import Action, Status
from apps.killswitches.models import RollbackRun
from apps.killswitches.rollback import rollback_perform, rollback_request
from apps.killswitches.switches import SwitchInvalid
from tests.killswitches import tools
from tests.killswitches.conftest import Desk, executed

pytestmark = pytest.mark.django_db


def test_rollback_last_3__one_irreversible__newest_first_and_listed_for_manual(
    desk: Desk, django_capture_on_commit_callbacks: Any
) -> None:
    # Given four succeeded actions of refund-bot, the second newest an irreversible one
    oldest = executed(desk, order_id="1001")
    refund_a = executed(desk, order_id="1002")
    ticket = executed(desk, tool="close_ticket", ticket_id="T-9")
    refund_b = executed(desk, order_id="1003")

    # When on-call rolls back its last 3
    with django_capture_on_commit_callbacks() as dispatched:
        run = rollback_request(
            scope="agent", target="refund-bot", count=3, reason="bad refunds", actor="dana"
        )
    # Then the three newest are chosen, newest first, and a worker is asked to undo them
    assert run.planned == [str(refund_b.pk), str(ticket.pk), str(refund_a.pk)]
    assert len(dispatched) == 1
    seen: list[int] = []
    run = rollback_perform(run_id=run.pk, progress=lambda r, entry: seen.append(r.done))

    # ... the refunds are undone through the tool's undo, in that order
    assert [(e["action"], e["outcome"]) for e in run.report] == [
        (str(refund_b.pk), "rolled_back"),
        (str(ticket.pk), "manual"),
        (str(refund_a.pk), "rolled_back"),
    ]
    assert [op for op, _ in tools.CALLS if op == "undo"] == ["undo", "undo"]
    assert Action.objects.get(pk=refund_b.pk).status == Status.ROLLED_BACK
    assert Action.objects.get(pk=refund_a.pk).status == Status.ROLLED_BACK
    # ... the irreversible one is untouched and says why
    assert Action.objects.get(pk=ticket.pk).status == Status.SUCCEEDED
    assert "irreversible" in run.report[1]["detail"]
    # ... the fourth was not asked for
    assert Action.objects.get(pk=oldest.pk).status == Status.SUCCEEDED
    # And progress was recorded after each action, and the run is finished
    assert seen == [1, 2, 3]
    assert run.state == RollbackRun.State.FINISHED
    assert run.finished_at is not None


def test_rollback__redelivered_run__carries_on_without_repeating(desk: Desk) -> None:
    first = executed(desk, order_id="1001")
    second = executed(desk, order_id="1002")
    run = rollback_request(
        scope="workflow", target="refunds", count=2, reason="x", actor="dana", dispatch=False
    )
    # A worker undid the first and was lost before the second
    RollbackRun.objects.filter(pk=run.pk).update(
        state=RollbackRun.State.RUNNING,
        report=[{"action": str(second.pk), "outcome": "rolled_back", "subject": "", "detail": ""}],
    )
    run = rollback_perform(run_id=run.pk)
    assert [e["action"] for e in run.report] == [str(second.pk), str(first.pk)]
    assert Action.objects.get(pk=first.pk).status == Status.ROLLED_BACK
    # Running a finished run again changes nothing
    assert rollback_perform(run_id=run.pk).report == run.report


@pytest.mark.parametrize(
    ("scope", "target", "count", "field"),
    [
        ("tool", "issue_refund", 3, "scope"),
        ("agent", "ghost-bot", 3, "target"),
        ("agent", "refund-bot", 0, "count"),
        ("agent", "refund-bot", "three", "count"),
        ("agent", "refund-bot", 3, "target"),  # nothing has succeeded yet
    ],
)
def test_rollback__bad_input__refused_naming_the_field(
    desk: Desk, scope: str, target: str, count: Any, field: str
) -> None:
    with pytest.raises(SwitchInvalid) as refused:
        rollback_request(scope=scope, target=target, count=count, reason="x", actor="dana")
    assert refused.value.field == field
    assert not RollbackRun.objects.exists()
