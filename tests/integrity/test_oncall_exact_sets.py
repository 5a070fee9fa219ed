"""On-call rollback and drain act on exactly the set of actions the person confirmed.

The reproduction: on-call confirmed rolling back order:1011/1008/1005, a newer action succeeded
between the confirmation page and the submit, and 1014/1011/1008 were rolled back; "drain 28"
cancelled 29. Now the submit carries the confirmed set, the server selects again, and a
different set is never acted on: the person is asked again, shown the new set and what changed
(the console's page, a 409 from the API, exit 3 and one line from the command)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from apps.accounts.roles import Role
from apps.accounts.staff_tokens import staff_token_create
from apps.actions.models import Action, Status
from apps.audit.models import AuditEvent
from apps.killswitches.models import DrainRun, RollbackRun
from apps.killswitches.rollback import rollback_perform
from tests.conftest import ROOT, database_url_for_subprocess
from tests.execution import conftest as execution
from tests.killswitches import conftest as on_call
from tests.killswitches import tools
from tests.killswitches.conftest import Desk, executed, propose

# The fixtures of the on-call tests (refund-bot with in-process tools) and of the execution
# tests (a queue of the test's own), for this module's tests.
desk = on_call.desk
own_queue = execution.own_queue

ROLLBACK_FORM = {
    "rollback-scope": "agent",
    "rollback-target": "refund-bot",
    "rollback-count": "3",
    "rollback-reason": "refunds to the wrong orders",
}
DRAIN_FORM = {
    "drain-scope": "agent",
    "drain-target": "refund-bot",
    "drain-mode": "cancel",
    "drain-reason": "refund loop",
}


def confirmed_set(html: str, prefix: str) -> str:
    """The ids a confirmation step sends back with its submit (its hidden field)."""
    found = re.search(rf'name="{prefix}-expected" value="([^"]*)"', html)
    assert found, "the confirmation step carries no set"
    return found.group(1)


def ids(*actions: Action) -> list[str]:
    return [str(action.pk) for action in actions]


def statuses(*actions: Action) -> list[str]:
    return [Action.objects.get(pk=action.pk).status for action in actions]


def three_refunds(desk: Desk) -> tuple[Action, Action, Action]:
    """refund-bot's refunds of orders 1005, 1008 and 1011, run to success in that order."""
    return (
        executed(desk, order_id="1005"),
        executed(desk, order_id="1008"),
        executed(desk, order_id="1011"),
    )


@pytest.fixture
def token(user_for: Any) -> str:
    user_for(Role.ONCALL)
    return staff_token_create(username="dana", actor="system:test").token


def api(method: str, path: str, token: str, body: dict[str, Any] | None = None) -> Any:
    headers = {"Authorization": f"Bearer {token}"}
    if method == "GET":
        return Client().get(f"/api/v1{path}", headers=headers)
    return Client().post(
        f"/api/v1{path}", json.dumps(body), content_type="application/json", headers=headers
    )


# --- rollback -------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rollback_console__newer_action_succeeds_after_confirmation__asked_again_nothing_undone(
    desk: Desk, client_for: Any
) -> None:
    # Given on-call looking at the confirmation of "the last 3 of refund-bot": 1011, 1008, 1005
    first, second, third = three_refunds(desk)
    client = client_for(Role.ONCALL)
    step = client.post("/oncall/rollback/", ROLLBACK_FORM).content.decode()
    assert confirmed_set(step, "rollback") == ",".join(ids(third, second, first))

    # When a newer refund (order 1014) succeeds before they press the button
    newer = executed(desk, order_id="1014")
    answer = client.post(
        "/oncall/rollback/",
        ROLLBACK_FORM | {"rollback-expected": confirmed_set(step, "rollback"), "confirm": "yes"},
    )

    # Then nothing is rolled back: no run, no undo called, every refund still succeeded
    assert answer.status_code == 409
    assert not RollbackRun.objects.exists()
    assert [op for op, _ in tools.CALLS if op == "undo"] == []
    assert statuses(first, second, third, newer) == [Status.SUCCEEDED] * 4
    # ... and they are asked again with the new set, the new refund marked, the one left out named
    html = answer.content.decode()
    assert 'data-testid="set-changed"' in html
    assert "nothing was rolled back" in html
    rows = re.findall(r'<tr data-testid="plan-row"( class="plan-new")?>.*?(order:\d+)', html)
    assert rows == [
        (' class="plan-new"', "order:1014"),
        ("", "order:1011"),
        ("", "order:1008"),
    ]
    assert "No longer in it: order:1005" in html
    assert confirmed_set(html, "rollback") == ",".join(ids(newer, third, second))

    # When they confirm the set they were shown now
    done = client.post(
        "/oncall/rollback/",
        ROLLBACK_FORM | {"rollback-expected": confirmed_set(html, "rollback"), "confirm": "yes"},
    )

    # Then exactly that set is rolled back, newest first, and the oldest refund stays
    run = RollbackRun.objects.get()
    assert done["Location"] == f"/oncall/rollbacks/{run.pk}/"
    assert run.planned == ids(newer, third, second)
    rollback_perform(run_id=run.pk)
    assert statuses(newer, third, second) == [Status.ROLLED_BACK] * 3
    assert statuses(first) == [Status.SUCCEEDED]
    requested = AuditEvent.objects.get(verb="rollback.requested")
    assert requested.payload["actions"] == run.planned
    assert requested.payload["confirmed"] is True


@pytest.mark.django_db
def test_rollback_console__submit_without_the_set__only_shows_the_confirmation(
    desk: Desk, client_for: Any
) -> None:
    # Given a refund that succeeded
    executed(desk)
    # When a confirming submit comes without the set its page showed
    answer = client_for(Role.ONCALL).post("/oncall/rollback/", ROLLBACK_FORM | {"confirm": "yes"})
    # Then it is taken as the first step: the set is shown, nothing is done
    assert answer.status_code == 200
    assert 'data-testid="confirm"' in answer.content.decode()
    assert not RollbackRun.objects.exists()


@pytest.mark.django_db
def test_rollback_console__tampered_set__asked_again_never_acted_on(
    desk: Desk, client_for: Any
) -> None:
    # Given three succeeded refunds, and a submit naming only the oldest one (a forged form)
    first, second, third = three_refunds(desk)
    forged = ROLLBACK_FORM | {"rollback-expected": str(first.pk), "confirm": "yes"}
    # When it is submitted
    answer = client_for(Role.ONCALL).post("/oncall/rollback/", forged)
    # Then nothing is rolled back: the set it names is not the set selected
    assert answer.status_code == 409
    assert not RollbackRun.objects.exists()
    assert statuses(first, second, third) == [Status.SUCCEEDED] * 3
    # And a value that is not a list of ids is an error on the form, not an action
    garbage = ROLLBACK_FORM | {"rollback-expected": "1011,1008", "confirm": "yes"}
    refused = client_for(Role.ONCALL).post("/oncall/rollback/", garbage)
    assert refused.status_code == 422
    assert "is not an action id" in refused.content.decode()
    assert not RollbackRun.objects.exists()


@pytest.mark.django_db
def test_rollback_api__expected_ids_outdated__409_naming_the_field_nothing_undone(
    desk: Desk, token: str
) -> None:
    # Given a script that read the set to roll back: refund-bot's last 3
    first, second, third = three_refunds(desk)
    preview = api("GET", "/rollbacks/preview?scope=agent&target=refund-bot&count=3", token)
    assert preview.status_code == 200, preview.content
    expected = preview.json()["expected_ids"]
    assert expected == ids(third, second, first)
    assert [row["subject"] for row in preview.json()["actions"]] == [
        "order:1011",
        "order:1008",
        "order:1005",
    ]

    # When a newer refund succeeds, then the script asks for that set
    newer = executed(desk, order_id="1014")
    body = {"scope": "agent", "target": "refund-bot", "count": 3, "reason": "r"}
    answer = api("POST", "/rollbacks", token, body | {"expected_ids": expected})

    # Then it is refused with a 409 naming the field and what changed, and nothing is done
    assert answer.status_code == 409, answer.content
    assert answer.json()["detail"] == (
        "The actions to roll back changed since they were confirmed; nothing was rolled back."
    )
    [error] = answer.json()["errors"]
    assert error["field"] == "expected_ids"
    assert error["message"] == (
        f"1 new: {newer.pk} (order:1014, succeeded); "
        f"1 no longer in it: {first.pk} (order:1005, succeeded); 3 now; "
        "GET /api/v1/rollbacks/preview shows the set now"
    )
    assert not RollbackRun.objects.exists()
    assert statuses(first, second, third, newer) == [Status.SUCCEEDED] * 4

    # When it sends the set read again
    again = api("GET", "/rollbacks/preview?scope=agent&target=refund-bot&count=3", token)
    accepted = api(
        "POST", "/rollbacks", token, body | {"expected_ids": again.json()["expected_ids"]}
    )
    # Then exactly that set is chosen
    assert accepted.status_code == 202, accepted.content
    assert accepted.json()["planned"] == ids(newer, third, second)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("own_queue")
def test_rollback_command__expect_outdated__exit_3_one_line_nothing_undone(desk: Desk) -> None:
    # Given on-call read the set with --preview
    first, second, third = three_refunds(desk)
    out = StringIO()
    call_command(
        "killswitch", "rollback", "--scope", "agent", "--target", "refund-bot", "--count", "3",
        "--preview", stdout=out,
    )  # fmt: skip
    preview = json.loads(out.getvalue())
    assert preview["expect"] == ",".join(ids(third, second, first))
    assert not RollbackRun.objects.exists()

    # When a newer refund succeeds, then they run the rollback expecting what they read
    newer = executed(desk, order_id="1014")
    done = subprocess.run(
        [
            sys.executable, "manage.py", "killswitch", "rollback", "--scope", "agent",
            "--target", "refund-bot", "--count", "3", "--reason", "incident 12",
            "--expect", preview["expect"],
        ],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_subprocess(), "LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )  # fmt: skip

    # Then it exits 3 with one line saying what changed, and nothing is rolled back
    assert done.returncode == 3, done.stderr
    [line] = done.stderr.strip().splitlines()
    assert line.startswith(
        "CommandError: --expect: the actions to roll back changed since they were confirmed; "
        f"nothing was rolled back: 1 new: {newer.pk} (order:1014, succeeded)"
    )
    assert line.endswith("--preview shows the set now")
    assert done.stdout == ""
    assert not RollbackRun.objects.exists()
    assert statuses(first, second, third, newer) == [Status.SUCCEEDED] * 4


# --- drain ----------------------------------------------------------------------------------


@pytest.mark.django_db
def test_drain_console__29th_arrives_after_confirming_28__asked_again_nothing_drained(
    desk: Desk, client_for: Any
) -> None:
    # Given on-call looking at the confirmation of a drain of refund-bot's 28 queued refunds
    queued = [propose(desk, order_id=str(2000 + n)) for n in range(28)]
    assert {action.status for action in queued} == {Status.QUEUED}
    client = client_for(Role.ONCALL)
    step = client.post("/oncall/drain/", DRAIN_FORM).content.decode()
    assert "Drain 28 actions" in step
    assert len(confirmed_set(step, "drain").split(",")) == 28

    # When a 29th is proposed before they press "Drain 28 actions"
    late = propose(desk, order_id="2099")
    answer = client.post(
        "/oncall/drain/",
        DRAIN_FORM | {"drain-expected": confirmed_set(step, "drain"), "confirm": "yes"},
    )

    # Then nothing is drained, and they are asked again: 29 now, the new one marked
    assert answer.status_code == 409
    assert not DrainRun.objects.exists()
    assert set(statuses(*queued, late)) == {Status.QUEUED}
    html = answer.content.decode()
    assert 'data-testid="set-changed"' in html
    assert "nothing was drained" in html
    assert "Drain 29 actions" in html
    assert re.findall(r'<tr data-testid="plan-row" class="plan-new">.*?(order:\d+)', html) == [
        "order:2099"
    ]

    # When they confirm the 29 they were shown
    client.post(
        "/oncall/drain/",
        DRAIN_FORM | {"drain-expected": confirmed_set(html, "drain"), "confirm": "yes"},
    )
    # Then exactly those 29 are cancelled
    run = DrainRun.objects.get()
    assert sorted(entry["action"] for entry in run.report) == sorted(ids(*queued, late))
    assert set(statuses(*queued, late)) == {Status.CANCELLED}
    started = AuditEvent.objects.get(verb="drain.started")
    assert sorted(started.payload["actions"]) == sorted(ids(*queued, late))
    assert started.payload["confirmed"] is True


@pytest.mark.django_db
def test_drain_api__expected_ids_outdated__409_naming_the_field_nothing_drained(
    desk: Desk, token: str
) -> None:
    # Given a script that read the queued and held work of refund-bot: one queued, one held
    queued = propose(desk, order_id="1041")
    held = propose(desk, amount_cents=30_000, order_id="1042")
    preview = api("GET", "/drains/preview?scope=agent&target=refund-bot", token)
    assert preview.status_code == 200, preview.content
    assert (preview.json()["queued"], preview.json()["held"]) == (1, 1)
    assert preview.json()["expected_ids"] == ids(queued, held)

    # When another refund is queued, then the script drains the set it read
    late = propose(desk, order_id="1043")
    body = {"scope": "agent", "target": "refund-bot", "mode": "cancel", "reason": "r"}
    answer = api("POST", "/drains", token, body | {"expected_ids": ids(queued, held)})

    # Then a 409 names the field and the new action, and nothing is drained
    assert answer.status_code == 409, answer.content
    assert answer.json()["detail"] == (
        "The actions to drain changed since they were confirmed; nothing was drained."
    )
    [error] = answer.json()["errors"]
    assert error["field"] == "expected_ids"
    assert error["message"].startswith(f"1 new: {late.pk} (order:1043, queued); 3 now")
    assert not DrainRun.objects.exists()
    assert statuses(queued, held, late) == [Status.QUEUED, Status.PENDING_REVIEW, Status.QUEUED]

    # When it sends the three it now reads
    accepted = api("POST", "/drains", token, body | {"expected_ids": ids(late, held, queued)})
    # Then exactly those three are drained (the order does not matter to a drain)
    assert accepted.status_code == 200, accepted.content
    assert [entry["action"] for entry in accepted.json()["report"]] == ids(queued, held, late)


@pytest.mark.django_db
def test_drain_command__expect_outdated__exit_3_nothing_drained(desk: Desk) -> None:
    # Given on-call read the drain's set with --preview: one queued refund
    queued = propose(desk, order_id="1041")
    out = StringIO()
    call_command(
        "killswitch", "drain", "--scope", "agent", "--target", "refund-bot", "--preview",
        stdout=out,
    )  # fmt: skip
    preview = json.loads(out.getvalue())
    assert preview["expect"] == str(queued.pk)

    # When that refund is cancelled by someone else, then they drain expecting it
    Action.objects.filter(pk=queued.pk).update(status=Status.CANCELLED)
    with pytest.raises(CommandError) as refused:
        call_command(
            "killswitch", "drain", "--scope", "agent", "--target", "refund-bot",
            "--mode", "cancel", "--reason", "incident 12", "--expect", preview["expect"],
            stdout=StringIO(),
        )  # fmt: skip

    # Then it is refused with exit code 3, naming the action that left the set
    assert refused.value.returncode == 3
    assert str(refused.value) == (
        "--expect: the actions to drain changed since they were confirmed; nothing was "
        f"drained: 1 no longer in it: {queued.pk} (order:1041, cancelled); 0 now; "
        "--preview shows the set now"
    )
    assert not DrainRun.objects.exists()
