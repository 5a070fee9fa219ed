"""/metrics: who may read it (the allowed addresses or the token; nobody when neither is set),
and what it says: the gate's decisions and latency, executions, review queues, queued work, tool
circuits, kill switches and budgets, each checked against what the test made happen."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from apps.accounts.roles import Role
from apps.actions.execution import action_execute
from apps.actions.gate import GateRefusal, action_propose
from apps.actions.models import ToolCircuit
from apps.core.metrics_access import metrics_networks, metrics_token
from apps.killswitches.switches import switch_engage
from apps.registry.models import Agent, Tool, Workflow
from apps.registry.services import IssuedKey, agent_key_create
from apps.reviews.models import ReviewItem
from apps.runtime.budgets import month_of
from apps.runtime.models import BudgetPeriod
from controlplane.environment import ConfigurationError
from tests.actions.conftest import proposal, refund_params
from tests.factories import make_agent, make_published_book, make_tool, make_workflow

pytestmark = pytest.mark.django_db

TOKEN = "scrape-token-0123456789abcdef"


@dataclass(frozen=True)
class World:
    """refund-bot in refunds with issue_refund, the refunds book published by bob (risk), a
    key; allowed actions are queued but nothing goes to the broker."""

    key: IssuedKey
    agent: Agent
    tool: Tool
    workflow: Workflow
    owner: User


@pytest.fixture
def world(user_for: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    monkeypatch.setattr("apps.actions.tasks.execute_action.delay", lambda action_id: None)
    owner: User = user_for(Role.RISK)
    workflow = make_workflow()
    tool = make_tool()
    agent = make_agent(owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    make_published_book(workflow=workflow, author=owner)
    key = agent_key_create(agent=agent, actor="system:test")
    return World(key=key, agent=agent, tool=tool, workflow=workflow, owner=owner)


@pytest.fixture
def scraper(settings: Any) -> Client:
    """The scraper: loopback is allowed (the test client's address is 127.0.0.1)."""
    settings.METRICS_ALLOWED_IPS = metrics_networks({"METRICS_ALLOWED_IPS": "127.0.0.1"})
    settings.METRICS_TOKEN = ""
    return Client()


def scrape(client: Client) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of one scrape."""
    response = client.get("/metrics")
    assert response.status_code == 200, response.content
    assert response["Content-Type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.content.decode()):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


# --- Access ----------------------------------------------------------------------------------


def test_metrics__neither_addresses_nor_token_configured__404(
    client: Client, settings: Any
) -> None:
    settings.METRICS_ALLOWED_IPS = []
    settings.METRICS_TOKEN = ""
    assert client.get("/metrics").status_code == 404


def test_metrics__address_not_allowed__403_saying_why(settings: Any) -> None:
    settings.METRICS_ALLOWED_IPS = metrics_networks({"METRICS_ALLOWED_IPS": "10.0.0.0/8"})
    settings.METRICS_TOKEN = ""
    answer = Client(REMOTE_ADDR="192.168.1.20").get("/metrics")
    assert answer.status_code == 403
    assert b"METRICS_ALLOWED_IPS" in answer.content
    assert b"escapement_" not in answer.content


def test_metrics__address_in_allowed_network__200(settings: Any) -> None:
    settings.METRICS_ALLOWED_IPS = metrics_networks({"METRICS_ALLOWED_IPS": "10.0.0.0/8, ::1"})
    settings.METRICS_TOKEN = ""
    answer = Client(REMOTE_ADDR="10.20.30.40").get("/metrics")
    assert answer.status_code == 200
    assert b"escapement_database_up 1.0" in answer.content


def test_metrics__token__right_one_200_wrong_one_403_and_never_shown(settings: Any) -> None:
    settings.METRICS_ALLOWED_IPS = []
    settings.METRICS_TOKEN = TOKEN
    client = Client(REMOTE_ADDR="203.0.113.9")
    right = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}"})
    wrong = client.get("/metrics", headers={"Authorization": f"Bearer {TOKEN}x"})
    missing = client.get("/metrics")
    assert right.status_code == 200
    assert TOKEN.encode() not in right.content
    assert (wrong.status_code, missing.status_code) == (403, 403)


def test_metrics__post__405(scraper: Client) -> None:
    assert scraper.post("/metrics").status_code == 405


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"METRICS_ALLOWED_IPS": "10.0.0.0/8,intranet"}, "METRICS_ALLOWED_IPS: 'intranet' is not"),
        ({"METRICS_ALLOWED_IPS": "300.1.1.1"}, "METRICS_ALLOWED_IPS: '300.1.1.1' is not"),
        ({"METRICS_TOKEN": "short"}, "METRICS_TOKEN: at least 16 characters, got 5"),
    ],
)
def test_configuration__bad_value__error_naming_the_variable(
    env: dict[str, str], message: str
) -> None:
    read = metrics_token if "METRICS_TOKEN" in env else metrics_networks
    with pytest.raises(ConfigurationError, match=message):
        read(env)


# --- Content ---------------------------------------------------------------------------------


def test_metrics__gate_decisions__counted_by_workflow_and_outcome(
    scraper: Client, world: World
) -> None:
    # Given the counts as they are (counters live for the whole process)
    before = scrape(scraper)

    # When refund-bot proposes a refund allowed (30.00), one held (300.00), one denied (3,000.00)
    # and one refused for its params
    for cents in (3_000, 30_000, 300_000):
        action_propose(
            key=world.key.record, proposal=proposal(params=refund_params(amount_cents=cents))
        )
    with pytest.raises(GateRefusal):
        action_propose(key=world.key.record, proposal=proposal(params={"order_id": 1}))

    # Then each is counted once under its outcome, and the gate's latency four more times
    after = scrape(scraper)
    for outcome in ("allow", "hold", "deny"):
        name = "escapement_gate_decisions_total"
        delta = value(after, name, workflow="refunds", outcome=outcome) - value(
            before, name, workflow="refunds", outcome=outcome
        )
        assert delta == 1, outcome
    refusals = "escapement_gate_refusals_total"
    assert value(after, refusals, status="422") - value(before, refusals, status="422") == 1
    count = "escapement_gate_seconds_count"
    assert value(after, count) - value(before, count) == 4
    # ... and an open review item for the held one, in the queue gauges
    assert value(after, "escapement_review_items_open", workflow="refunds", kind="hold") == 1
    assert value(after, "escapement_review_items_overdue", workflow="refunds") == 0
    # ... and the allowed one waits in the queue for a worker
    assert value(after, "escapement_actions_waiting", workflow="refunds", status="queued") == 1


def test_metrics__blocked_by_kill_switch__counted_as_blocked_and_switch_shown(
    scraper: Client, world: World
) -> None:
    before = scrape(scraper)
    switch_engage(scope="agent", target="refund-bot", reason="drill", actor=world.owner, via="api")
    action_propose(key=world.key.record, proposal=proposal())
    after = scrape(scraper)
    name = "escapement_gate_decisions_total"
    blocked = {"workflow": "refunds", "outcome": "blocked"}
    assert value(after, name, **blocked) - value(before, name, **blocked) == 1
    assert value(after, "escapement_kill_switches_engaged", scope="agent", kind="manual") == 1


def test_metrics__caller_text__never_becomes_a_label(scraper: Client, world: World) -> None:
    # When a proposal names a workflow that does not exist (refused: out of the key's scope)
    with pytest.raises(GateRefusal):
        action_propose(key=world.key.record, proposal=proposal(workflow="<script>evil</script>"))

    # Then nothing the caller typed appears in the metrics
    body = scraper.get("/metrics").content
    assert b"evil" not in body
    assert world.key.key.encode() not in body


def test_metrics__execution__counted_by_result(scraper: Client, world: World) -> None:
    # Given issue_refund run in-process, and one refund allowed and queued
    world.tool.connector = Tool.Connector.CALLABLE
    world.tool.callable_path = "tests.actions.tools.refund"
    world.tool.save()
    action = action_propose(key=world.key.record, proposal=proposal()).action
    before = scrape(scraper)

    # When a worker runs it, and the same delivery arrives again
    action_execute(action_id=action.pk)
    action_execute(action_id=action.pk)

    # Then one success is counted (the duplicate is not), and nothing waits any more
    after = scrape(scraper)
    name = "escapement_executions_total"
    assert value(after, name, result="succeeded") - value(before, name, result="succeeded") == 1
    assert value(after, name, result="failed") - value(before, name, result="failed") == 0
    assert value(after, "escapement_actions_waiting", workflow="refunds", status="queued") == 0


def test_metrics__oldest_open_and_overdue_review_items(scraper: Client, world: World) -> None:
    # Given a held refund whose item was opened an hour ago and is past its deadline
    action = action_propose(
        key=world.key.record, proposal=proposal(params=refund_params(amount_cents=30_000))
    ).action
    an_hour_ago = timezone.now() - timedelta(hours=1)
    ReviewItem.objects.filter(action=action).update(
        created_at=an_hour_ago, deadline=an_hour_ago + timedelta(minutes=30)
    )

    # Then the queue's oldest item is an hour old and overdue
    samples = scrape(scraper)
    assert value(samples, "escapement_review_oldest_open_seconds", workflow="refunds") > 3_500
    assert value(samples, "escapement_review_items_overdue", workflow="refunds") == 1


def test_metrics__circuits_open_and_closed(scraper: Client, world: World) -> None:
    # Given issue_refund's circuit open, and a second tool that never failed
    ToolCircuit.objects.create(
        tool=world.tool, state=ToolCircuit.State.OPEN, opened_at=timezone.now()
    )
    Tool.objects.create(slug="send_email", name="send email", input_schema={"type": "object"})

    samples = scrape(scraper)

    circuit = "escapement_tool_circuit_open"
    assert value(samples, circuit, tool="issue_refund", state="open") == 1
    assert value(samples, circuit, tool="send_email", state="closed") == 0


def test_metrics__budget_use_this_month(scraper: Client, world: World) -> None:
    # Given the refunds budget of 10.00 with 6.00 spent and 1.50 reserved, and refund-bot's
    # budget without a limit with 2.00 spent and one refused call
    BudgetPeriod.objects.create(
        scope="workflow",
        workflow=world.workflow,
        month=month_of(),
        limit_cents=Decimal(1_000),
        spent_cents=Decimal(600),
        reserved_cents=Decimal(150),
    )
    BudgetPeriod.objects.create(
        scope="agent",
        agent=world.agent,
        month=month_of(),
        spent_cents=Decimal(200),
        refused_calls=1,
    )

    samples = scrape(scraper)

    assert value(samples, "escapement_budget_used_ratio", scope="workflow", owner="refunds") == 0.75
    assert value(samples, "escapement_budget_spent_cents", scope="agent", owner="refund-bot") == 200
    assert value(samples, "escapement_budget_refused_calls", scope="agent", owner="refund-bot") == 1
    assert ("escapement_budget_used_ratio", (("owner", "refund-bot"), ("scope", "agent"))) not in (
        samples
    )


def test_metrics__celery_queue_length_from_redis(scraper: Client, settings: Any) -> None:
    # Given three messages waiting in a queue of the test's own
    import redis

    settings.CELERY_TASK_DEFAULT_QUEUE = "metrics-test-queue"
    broker = redis.Redis.from_url(settings.CELERY_BROKER_URL)
    broker.delete("metrics-test-queue")
    broker.rpush("metrics-test-queue", "a", "b", "c")
    try:
        samples = scrape(scraper)
    finally:
        broker.delete("metrics-test-queue")
    assert value(samples, "escapement_celery_queue_length", queue="metrics-test-queue") == 3


def test_metrics__execution_refused_by_the_system__counted_as_failed(
    scraper: Client, world: World
) -> None:
    # Given issue_refund pointing at a function that does not exist (a permanent failure)
    world.tool.connector = Tool.Connector.CALLABLE
    world.tool.callable_path = "tests.actions.tools.no_such_tool"
    world.tool.save()
    action = action_propose(key=world.key.record, proposal=proposal()).action
    before = scrape(scraper)

    # When a worker runs it
    action_execute(action_id=action.pk)

    # Then one failure is counted
    after = scrape(scraper)
    name = "escapement_executions_total"
    assert value(after, name, result="failed") - value(before, name, result="failed") == 1
    assert value(after, name, result="succeeded") - value(before, name, result="succeeded") == 0
