"""The living demo: its agents pick up demo work, run it through a real worker against the
sandbox, fill the review queue, record costs, and sometimes fail; a setting and a command stop
the traffic. Left running for hours it never quarantines its own agents, keeps its queue a size
a person can work, and gives the SLO page, backtests and rollbacks something to show."""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.core.management import call_command
from django.core.management.base import CommandError
from django.utils import timezone

from apps.actions.execution import action_execute
from apps.actions.models import Action
from apps.books.models import BookVersion
from apps.books.services import draft_create, draft_update
from apps.demo import traffic
from apps.demo.colleagues import (
    COLLEAGUE_AFTER,
    DEMO_COLLEAGUES,
    demo_colleagues_ensure,
    demo_colleagues_work,
)
from apps.demo.traffic import (
    RUNS_PER_TICK,
    SCRIPT,
    Skip,
    demo_queue_load,
    demo_traffic_tick,
    demo_work,
    open_demo_items,
)
from apps.killswitches.models import KillSwitch
from apps.killswitches.rollback import rollback_perform, rollback_request
from apps.ledger.backtest import backtest_perform, backtest_request
from apps.ledger.models import Backtest, SloAlert
from apps.ledger.slos import slo_check, slo_dashboard
from apps.reviews.models import ReviewDecision, ReviewItem
from apps.runtime.models import ModelCall, Run, Step
from apps.runtime.services import runtime_sweep, step_execute
from apps.runtime.traffic_switch import demo_traffic_set
from apps.sandbox.models import Order

pytestmark = pytest.mark.django_db(transaction=True)


def test_demo__a_script_cycle__fills_the_queue_runs_actions_and_records_costs(
    demo_world: str, settings: Any, celery_worker: str
) -> None:
    # Given the demo world and its traffic switched on
    settings.DEMO_TRAFFIC = True
    # When the demo agents pick up one cycle of the script
    runs = demo_traffic_tick(count=len(SCRIPT))
    assert len(runs) == len(SCRIPT)
    # Then every run settles (the scheduler's sweep played by the test; the deadline is a
    # ceiling for a busy machine, not a speed the demo must keep)
    deadline = time.monotonic() + 180

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


# --- Left running: the firewall, the queue, the colleagues, the numbers -------------------------

WORKFLOWS = sorted({scenario.workflow for scenario in SCRIPT})
TICKS_PER_PASS = len(SCRIPT) // RUNS_PER_TICK


def settle(rounds: int = 100) -> None:
    """Play the worker and the scheduler in-process: run the queued steps and actions and
    resume the decided steps, until nothing is left to do."""
    for _ in range(rounds):
        steps = list(Step.objects.filter(state="queued").values_list("pk", flat=True))
        actions = list(Action.objects.filter(status="queued").values_list("pk", flat=True))
        for step_id in steps:
            step_execute(step_id=step_id)
        for action_id in actions:
            action_execute(action_id=action_id)
        resumed = runtime_sweep().resumed
        if not steps and not actions and not resumed:
            return
    raise AssertionError("the demo work did not settle")


def passes(count: int) -> None:
    """`count` passes of the script, tick after tick, each tick's work done before the next."""
    for _ in range(count * TICKS_PER_PASS):
        demo_traffic_tick()
        settle()


def test_demo_traffic__forbidden_work_every_pass__agents_never_quarantined(
    demo_world: str, settings: Any, own_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the demo world with its traffic on, the firewall at its defaults (5 forbid denials
    # in 300 s quarantine an agent), and the script at its densest: every line, the refund and
    # the admin grant the books forbid among them, on every pass, and no queue cap
    settings.DEMO_TRAFFIC = True
    assert settings.FIREWALL_ENABLED
    assert settings.FIREWALL_DENIALS == 5
    every_pass = tuple(dataclasses.replace(scenario, every=1) for scenario in SCRIPT)
    monkeypatch.setattr(traffic, "SCRIPT", every_pass)
    monkeypatch.setattr(traffic, "OPEN_ITEMS_CAP", 1000)
    # When six passes run back to back, within a minute (without the pacing, refund-bot is
    # quarantined on the fifth)
    passes(6)
    # Then the firewall quarantined no demo agent
    assert not KillSwitch.objects.filter(kind="quarantine").exists()
    # because each agent was denied once: no forbidden request was made again inside the
    # firewall's window
    denied = Counter(Action.objects.filter(status="denied").values_list("agent__slug", flat=True))
    assert denied == {"refund-bot": 1, "access-bot": 1}
    assert not Action.objects.filter(status="blocked").exists()
    # and every run ended or waits for a person
    assert set(Run.objects.values_list("state", flat=True)) <= {"succeeded", "waiting"}


def test_demo_traffic__nobody_works_the_queue__it_stops_at_the_cap_one_item_per_subject(
    demo_world: str, settings: Any, own_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given the demo traffic on, a cap of 5 open demo items per workflow, and nobody on duty
    settings.DEMO_TRAFFIC = True
    monkeypatch.setattr(traffic, "OPEN_ITEMS_CAP", 5)
    assert not User.objects.filter(username__in=DEMO_COLLEAGUES).exists()
    # When five passes of the script run and nobody decides anything
    passes(5)
    # Then no workflow's queue holds more than the cap, and the refunds queue reached it
    load = {workflow: open_demo_items(workflow).count() for workflow in WORKFLOWS}
    assert all(count <= 5 for count in load.values()), load
    assert load["refunds"] == 5
    # and further refund work is not started while it is full
    with pytest.raises(Skip, match="refunds queue is full"):
        demo_work(0)
    assert demo_queue_load("refunds") == 5
    # and no order, invoice or employee has two items open: each business event was
    # proposed once, and busy subjects were not picked again
    subjects = Counter(
        ReviewItem.objects.filter(state="open").values_list("action__subject", flat=True)
    )
    assert max(subjects.values()) == 1, subjects
    refunds = Action.objects.filter(tool__slug="issue_refund").values_list("subject", flat=True)
    assert len(set(refunds)) >= 5


def test_demo_colleagues__items_waiting_past_their_time__decided_as_the_story_says(
    demo_world: str, settings: Any, own_queue: str, user_for: Any
) -> None:
    from apps.accounts.roles import Role
    from apps.reviews.services import review_claim

    # Given the colleagues on duty, one pass of the demo traffic with its work done, and one
    # spot check a supervisor has claimed
    settings.DEMO_TRAFFIC = True
    demo_colleagues_ensure()
    passes(1)
    claimed = ReviewItem.objects.get(kind="spot_check", action__params__amount_cents=1500)
    review_claim(item_id=claimed.pk, user=user_for(Role.SUPERVISOR))
    waiting = set(ReviewItem.objects.filter(state="open").values_list("pk", flat=True))
    assert len(waiting) >= 6
    # When they look before the items have waited long enough, they leave them to visitors
    assert demo_colleagues_work() == []
    # and when they look once every item has waited past its time
    later = timezone.now() + COLLEAGUE_AFTER + timedelta(minutes=1)
    closed = demo_colleagues_work(later, limit=100)
    settle()
    # Then they decided every one of them but the claimed one
    assert set(closed) == waiting - {claimed.pk}
    claimed.refresh_from_db()
    assert claimed.state == "open"
    # the change-of-mind refund rejected, the due one and the spot checks approved
    refunds = Action.objects.filter(tool__slug="issue_refund")
    assert refunds.get(params__reason="changed their mind").status == "rejected"
    assert refunds.get(params__amount_cents=24000).status == "succeeded"
    spot_checks = ReviewItem.objects.filter(kind="spot_check", pk__in=closed)
    assert spot_checks.exists()
    assert set(spot_checks.values_list("outcome", flat=True)) == {"approve"}
    # the red-zone MFA reset approved by both of them, and run
    mfa = ReviewItem.objects.get(action__tool__slug="reset_mfa")
    deciders = set(ReviewDecision.objects.filter(item=mfa).values_list("user__username", flat=True))
    assert deciders == set(DEMO_COLLEAGUES)
    assert Action.objects.get(tool__slug="reset_mfa").status == "succeeded"
    # the grant for someone who has left rejected, not run again
    fallback = ReviewItem.objects.get(kind="fallback", action__params__employee_id="E-106")
    assert fallback.outcome == "reject"
    assert Action.objects.filter(params__employee_id="E-106").count() == 1


def test_demo__after_traffic_and_decisions__slos_alerts_backtest_and_rollback_have_figures(
    demo_world: str, settings: Any, own_queue: str, user_for: Any
) -> None:
    from apps.accounts.roles import Role

    # Given one pass of demo traffic, worked by the colleagues on duty
    settings.DEMO_TRAFFIC = True
    demo_colleagues_ensure()
    passes(1)
    demo_colleagues_work(timezone.now() + COLLEAGUE_AFTER + timedelta(minutes=1), limit=100)
    settle()
    # When on-call opens the SLO page (and the scheduler's check runs)
    slo_check()
    rows = {
        (entry.workflow.slug, row.spec.measure): row
        for entry in slo_dashboard()
        for row in entry.rows
    }
    # Then every workflow shows a step latency, and refunds its approval and override rates
    for workflow in WORKFLOWS:
        assert rows[(workflow, "latency_p95_ms")].value is not None
    assert rows[("refunds", "override_rate")].value == 0
    approval = rows[("refunds", "approval_rate")].value
    assert approval is not None
    assert approval < 0.85
    # and the change-of-mind refunds people reject have raised the refunds approval alert
    alert = SloAlert.objects.get(state="open", workflow__slug="refunds", slo="approval_rate")
    assert "below its minimum" in alert.message

    # When risk backtests a draft that holds every refund of 20.00 EUR or more
    risk = user_for(Role.RISK)
    refunds = BookVersion.objects.get(workflow__slug="refunds", status="published")
    draft = draft_create(workflow=refunds.workflow, user=risk)
    tools = [
        {**rule, "auto_cap": 2000} if rule["tool"] == "issue_refund" else rule
        for rule in draft.tools
    ]
    draft_update(version_id=draft.pk, user=risk, values={"tools": tools})
    backtest = backtest_request(workflow=refunds.workflow, draft=draft, user=risk, limit=100)
    done = backtest_perform(backtest_id=backtest.pk)
    # Then it decides the demo's recorded refunds, and the 30.00 EUR one flips to a hold
    assert done.state == Backtest.State.DONE, done.error
    assert done.result is not None
    assert done.result["total"] == Action.objects.filter(workflow__slug="refunds").count()
    assert done.result["moves"].get("allow->hold", 0) >= 1

    # When on-call rolls back refund-bot's last 3 actions
    newest = list(
        Action.objects.filter(agent__slug="refund-bot", status="succeeded").order_by(
            "-finished_at", "-started_at", "-id"
        )[:3]
    )
    assert len(newest) == 3
    before = {o.pk: o.refunded_cents for o in Order.objects.all()}
    run = rollback_request(
        scope="agent",
        target="refund-bot",
        count=3,
        reason="demo: a refund rule misfired",
        actor=user_for(Role.ONCALL),
        expected=[str(action.pk) for action in newest],
        dispatch=False,
    )
    report = rollback_perform(run_id=run.pk).report
    # Then each row reports the order's balance as the sandbox now shows it
    assert [row["outcome"] for row in report] == ["rolled_back"] * 3
    for row, action in zip(report, newest, strict=True):
        order = Order.objects.get(pk=action.params["order_id"])
        refundable = (order.total_cents - order.refunded_cents) / 100
        assert row["detail"].startswith(f"order {order.pk}: {refundable:.2f} of")
    returned = sum(before[o.pk] - o.refunded_cents for o in Order.objects.all())
    assert returned == sum(int(action.params["amount_cents"]) for action in newest)


def test_demo_colleagues_ensure__run_twice__two_supervisors_created_once(db: Any) -> None:
    # Given no colleagues yet
    # When the seed makes them, twice
    first = demo_colleagues_ensure()
    second = demo_colleagues_ensure()
    # Then both exist once, as supervisors, and the second run created nothing
    assert first == [f"colleague {name}" for name in DEMO_COLLEAGUES]
    assert second == []
    for name in DEMO_COLLEAGUES:
        user = User.objects.get(username=name)
        assert list(user.groups.values_list("name", flat=True)) == ["supervisor"]
