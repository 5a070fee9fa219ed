"""manage.py killswitch: engage, release, list, proof, drain and rollback as JSON; bad input
exits 1 with one line naming the option."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command

from apps.actions.models import Action, Status
from apps.killswitches.models import KillSwitch
from tests.conftest import ROOT, database_url_for_subprocess
from tests.killswitches.conftest import Desk, executed, propose


def run(*args: str) -> dict[str, Any]:
    out = StringIO()
    call_command("killswitch", *args, stdout=out, stderr=StringIO())
    document: dict[str, Any] = json.loads(out.getvalue())
    return document


@pytest.mark.django_db
def test_engage__prints_the_switch_and_its_proof(desk: Desk) -> None:
    document = run("engage", "--scope", "agent", "--target", "refund-bot", "--reason", "loop")
    switch = KillSwitch.objects.get()
    assert document["switch"] == switch.pk
    assert (document["scope"], document["target"], document["reason"]) == (
        "agent",
        "refund-bot",
        "loop",
    )
    assert document["engaged_by"] == "system:cli"
    assert document["started_after_engage"] == 0
    assert switch.engaged_via == "command"


@pytest.mark.django_db
def test_proof_list_and_release_by_scope(desk: Desk) -> None:
    switch_id = run("engage", "--scope", "global", "--reason", "incident 12")["switch"]
    propose(desk)
    proof = run("proof", str(switch_id))
    assert proof["blocked_since_engage"] == 1
    assert proof["holds"] is True
    assert [entry["switch"] for entry in run("list")["switches"]] == [switch_id]

    released = run("release", "--scope", "global", "--reason", "all clear")
    assert released["released_at"] is not None
    assert run("list")["switches"] == []
    assert [entry["switch"] for entry in run("list", "--all")["switches"]] == [switch_id]


@pytest.mark.django_db
def test_drain_and_rollback__per_action_reports(desk: Desk) -> None:
    done = executed(desk)
    queued = propose(desk, order_id="1050")
    drained = run(
        "drain", "--scope", "agent", "--target", "refund-bot", "--mode", "cancel",
        "--reason", "incident",
    )  # fmt: skip
    assert [(e["action"], e["outcome"]) for e in drained["report"]] == [
        (str(queued.pk), "cancelled")
    ]
    rolled = run(
        "rollback", "--scope", "agent", "--target", "refund-bot", "--count", "2",
        "--reason", "incident",
    )  # fmt: skip
    assert rolled["state"] == "finished"
    assert [(e["action"], e["outcome"]) for e in rolled["report"]] == [
        (str(done.pk), "rolled_back")
    ]
    assert Action.objects.get(pk=done.pk).status == Status.ROLLED_BACK


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["proof", "77"], "switch: no kill switch 77"),
        (["proof", "x"], "switch: 'x' is not a switch id"),
        (["release", "--scope", "global", "--reason", "r"], "no kill switch is engaged on global"),
        (["drain", "--scope", "agent", "--target", "refund-bot", "--reason", "r"], "--mode:"),
        (["rollback", "--scope", "agent", "--target", "refund-bot", "--reason", "r"], "--count:"),
        ([], "give a verb"),
    ],
)
def test_bad_input__command_error_naming_the_option(
    desk: Desk, args: list[str], message: str
) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("killswitch", *args, stdout=StringIO())


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("args", "line"),
    [
        (
            ["--scope", "planet", "--reason", "loop"],
            "CommandError: --scope: unknown scope 'planet'; scopes are global, workflow, agent, "
            "tool",
        ),
        (
            ["--scope", "agent", "--target", "ghost-bot", "--reason", "loop"],
            "CommandError: --target: no agent 'ghost-bot' is registered",
        ),
        (
            ["--scope", "agent", "--target", "refund-bot"],
            "CommandError: --reason: say why: the reason is shown to on-call and kept in the audit",
        ),
    ],
    ids=["unknown-scope", "unknown-target", "missing-reason"],
)
def test_engage__bad_input__exit_1_with_one_line(desk: Desk, args: list[str], line: str) -> None:
    # Run as on-call runs it: a process of its own, on the same database
    done = subprocess.run(
        [sys.executable, "manage.py", "killswitch", "engage", *args],
        cwd=ROOT,
        env={**os.environ, "DATABASE_URL": database_url_for_subprocess(), "LOG_FORMAT": "text"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert done.stderr.strip().splitlines() == [line]
    assert done.stdout == ""
    assert not KillSwitch.objects.exists()
