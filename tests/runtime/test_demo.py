"""The living demo: its agents pick up demo work, run it through a real worker against the
sandbox, fill the review queue, record costs, and sometimes fail; a setting and a command stop
the traffic."""

from __future__ import annotations

import time
from io import StringIO
from typing import Any

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from apps.actions.models import Action
from apps.reviews.models import ReviewItem
from apps.runtime.demo import SCRIPT, demo_traffic_set, demo_traffic_tick
from apps.runtime.models import ModelCall, Run
from apps.runtime.services import runtime_sweep

pytestmark = pytest.mark.django_db(transaction=True)


def test_demo__a_script_cycle__fills_the_queue_runs_actions_and_records_costs(
    demo_world: str, settings: Any, celery_worker: str
) -> None:
    # Given the demo world and its traffic switched on
    settings.DEMO_TRAFFIC = True
    # When the demo agents pick up one cycle of the script
    runs = demo_traffic_tick(count=len(SCRIPT))
    assert len(runs) == len(SCRIPT)
    # Then, within a minute (the scheduler's sweep played by the test)
    deadline = time.monotonic() + 60

    def settled() -> bool:
        return not Run.objects.filter(state__in=("queued", "running")).exists() and (
            not Action.objects.filter(status__in=("queued", "running")).exists()
        )

    while not settled() and time.monotonic() < deadline:
        runtime_sweep()
        time.sleep(0.3)
    assert settled(), list(Run.objects.values_list("workflow__slug", "state", "error"))
    # held refunds and the MFA reset wait in the review queue
    held = ReviewItem.objects.filter(state="open", kind="hold")
    assert held.filter(action__tool__slug="issue_refund").exists()
    assert held.filter(action__tool__slug="reset_mfa", approvals_required=2).exists()
    # refunds and grants ran against the sandbox
    assert Action.objects.filter(status="succeeded", tool__slug="issue_refund").exists()
    assert Action.objects.filter(status="succeeded", tool__slug="grant_access").exists()
    # a grant for someone who has left failed and became a fallback for the escalation owner
    failed = Action.objects.get(status="failed", params__employee_id="E-106")
    assert ReviewItem.objects.filter(action=failed, kind="fallback").exists()
    # policies denied what no agent may do
    assert Action.objects.filter(status="denied", params__role="admin").exists()
    # model calls were recorded with their cost, and personal data was masked in them
    assert ModelCall.objects.filter(cost_cents__gt=0).exists()
    assert ModelCall.objects.filter(pii_masked__gt=0).exists()
    # and every run is done or waits for a person, none failed
    states = set(Run.objects.values_list("state", flat=True))
    assert states <= {"succeeded", "waiting"}, states


def test_demo_traffic__off_by_setting_or_paused__starts_nothing(
    demo_world: str, settings: Any, own_queue: str
) -> None:
    settings.DEMO_TRAFFIC = False
    assert demo_traffic_tick() == []
    settings.DEMO_TRAFFIC = True
    demo_traffic_set(paused=True, by="test")
    assert demo_traffic_tick() == []
    demo_traffic_set(paused=False, by="test")
    assert len(demo_traffic_tick()) == 2
    assert Run.objects.count() == 2


def test_demo_traffic_command(demo_world: str, settings: Any, own_queue: str) -> None:
    settings.DEMO_TRAFFIC = True
    out = StringIO()
    call_command("demo_traffic", "off", stdout=out)
    assert "Demo traffic: paused" in out.getvalue()
    assert demo_traffic_tick() == []
    call_command("demo_traffic", "on", stdout=out)
    call_command("demo_traffic", "status", stdout=out)
    assert out.getvalue().splitlines()[-1].startswith("Demo traffic: on")
    with pytest.raises(CommandError):
        call_command("demo_traffic", "sideways")


def test_run_agent_command(demo_world: str, own_queue: str) -> None:
    out = StringIO()
    call_command(
        "run_agent", "access-requests", "--subject", "employee:E-101",
        "--input", '{"employee_id": "E-101", "system": "jira", "role": "viewer", '
        '"duration_days": 3, "ticket": "viewer on jira"}', stdout=out,
    )  # fmt: skip
    assert "started" in out.getvalue()
    assert Run.objects.get().subject == "employee:E-101"
    with pytest.raises(CommandError, match="--input: not valid JSON"):
        call_command("run_agent", "refunds", "--input", "{nope")
    with pytest.raises(CommandError, match="workflow: workflow 'nope' has no hosted agent"):
        call_command("run_agent", "nope")
