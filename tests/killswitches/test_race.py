"""The guarantee under load: while hundreds of allowed actions flow through the gate to two
Celery worker processes (real PostgreSQL and Redis), on-call engages a switch; afterwards no
action it covers has a start time after the engage time, and the proof says so.

Each action takes 300 ms in its tool and the two workers run four at a time. Once the flow has
run a while, the tool calls are held (tools.SLOW_NOOP_HOLD), so that a backlog builds up however
fast this machine proposes; the switch is engaged once work of both agents is queued, the moment
the calls are let go, while the workers come back for more; and the proposals go on until some
have been blocked by it. The workers must refuse the backlog at the claim, while actions already
claimed run to their end."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command
from django.db import connection
from django.db.models import Count

from apps.accounts.roles import Role
from apps.actions.gate import Proposal, action_propose
from apps.actions.models import Action, Status
from apps.killswitches.coverage import in_scope
from apps.killswitches.models import KillSwitch
from apps.killswitches.proof import switch_proof
from apps.killswitches.switches import switch_engage
from apps.registry.models import Agent, AgentKey, Tool
from apps.registry.services import agent_key_create
from tests.execution.conftest import (
    Worker,
    own_queue,  # noqa: F401 (fixture)
    worker_start,
    worker_stop,
)
from tests.factories import make_agent, make_published_book, make_workflow
from tests.killswitches.tools import SLOW_NOOP_HOLD

pytestmark = [pytest.mark.django_db(transaction=True)]

ENGAGE_AFTER_PROPOSED = 200  # both agents together
ENGAGE_AFTER_STARTED = 30  # of refund-bot
ENGAGE_WITH_QUEUED = 10  # of each agent, waiting for a worker
STOP_AFTER_BLOCKED = 5  # of refund-bot, after the engage
MAX_PER_AGENT = 2_000
# Ceilings of the waits below: never reached on a healthy run, however busy the machine.
WAIT_SECONDS = 240
SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"n": {"type": "integer", "minimum": 0}},
    "required": ["n"],
    "additionalProperties": False,
}
CONTROLS: dict[str, Any] = {
    "objective": "Race test: a slow tool that does nothing, allowed on its own.",
    "tools": [{"tool": "slow_noop", "risk_zone": "green"}],
    "confidence_threshold": Decimal("0.8"),
    "autonomy_mode": "autonomous",
    "currency": "EUR",
}


@dataclass(frozen=True)
class Flow:
    keys: dict[str, AgentKey]  # refund-bot and invoice-matcher
    workers: list[Worker]
    hold: Path  # while it exists, the workers' tool calls do not return

    def diagnosis(self) -> str:
        """What is unfinished, and the end of each worker's log, for a failure message."""
        unfinished = list(
            Action.objects.filter(status__in=[Status.RUNNING, Status.QUEUED]).values_list(
                "subject", "status", "attempts", "error"
            )[:20]
        )
        logs = "\n".join(worker.log()[-3000:] for worker in self.workers)
        return f"unfinished: {unfinished}\n{logs}"


@pytest.fixture
def flow(
    user_for: Any,
    own_queue: str,  # noqa: F811
    settings: Any,
    tmp_path: Path,
) -> Iterator[Flow]:
    # Hundreds of proposals a minute from one agent: the firewall's rate limit is not the
    # subject here.
    settings.FIREWALL_RATE_FLOOR = 1_000_000
    workflow = make_workflow()
    tool = Tool.objects.create(
        slug="slow_noop",
        name="slow no-op",
        input_schema=SCHEMA,
        connector=Tool.Connector.CALLABLE,
        callable_path="tests.killswitches.tools.slow_noop",
        risk_zone="green",
    )
    keys = {}
    for slug in ("refund-bot", "invoice-matcher"):
        agent = make_agent(slug, owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
        keys[slug] = agent_key_create(agent=agent, actor="system:test").record
    make_published_book(workflow=workflow, author=user_for(Role.RISK), values=CONTROLS)
    hold = tmp_path / "hold"
    env = {SLOW_NOOP_HOLD: str(hold)}
    workers: list[Worker] = []
    try:
        for name in ("race-a", "race-b"):
            workers.append(
                worker_start(queue=own_queue, name=name, env=env, pool="threads", concurrency=2)
            )
        yield Flow(keys, workers, hold)
    finally:
        hold.unlink(missing_ok=True)
        for worker in workers:
            worker_stop(worker)


def propose_all(flow: Flow, stop: threading.Event) -> threading.Thread:
    """Alternate proposals of the two agents through the gate, on a thread of their own, until
    `stop` is set."""

    def run() -> None:
        try:
            for n in range(MAX_PER_AGENT):
                for slug, key in flow.keys.items():
                    if stop.is_set():
                        return
                    fresh = AgentKey.objects.select_related("agent").get(pk=key.pk)
                    action_propose(
                        key=fresh,
                        proposal=Proposal(
                            workflow="refunds",
                            tool="slow_noop",
                            params={"n": n},
                            subject=f"{slug}:{n}",
                            confidence=Decimal("0.9"),
                        ),
                    )
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def wait_until(condition: Any, what: str, flow: Flow, timeout: float = WAIT_SECONDS) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}: {flow.diagnosis()}"
        time.sleep(0.05)


def started(slug: str) -> int:
    return Action.objects.filter(agent__slug=slug, started_at__isnull=False).count()


def settled(switch: KillSwitch) -> bool:
    """Nothing running, and nothing queued but what the switch holds back."""
    if Action.objects.filter(status=Status.RUNNING).exists():
        return False
    if switch.scope == "global":
        return True  # every queued action is held back
    outside = Action.objects.filter(status=Status.QUEUED).exclude(
        in_scope(switch.scope, switch.target)
    )
    return not outside.exists()


def of_refund_bot(**conditions: Any) -> int:
    return Action.objects.filter(agent__slug="refund-bot", **conditions).count()


def queued_of_each() -> int:
    """The fewest actions waiting for a worker, of either agent."""
    counts = dict(
        Action.objects.filter(status=Status.QUEUED)
        .values("agent__slug")
        .annotate(n=Count("pk"))
        .values_list("agent__slug", "n")
    )
    return min(counts.get(slug, 0) for slug in ("refund-bot", "invoice-matcher"))


def race(flow: Flow, *, scope: str, target: str) -> KillSwitch:
    stop = threading.Event()
    proposer = propose_all(flow, stop)
    try:
        wait_until(
            lambda: (
                Action.objects.count() >= ENGAGE_AFTER_PROPOSED
                and started("refund-bot") >= ENGAGE_AFTER_STARTED
            ),
            "the flow to run a while",
            flow,
        )
        # The workers fall behind: their tool calls wait, while the gate goes on admitting
        flow.hold.touch()
        wait_until(lambda: queued_of_each() >= ENGAGE_WITH_QUEUED, "a backlog of each agent", flow)
        # ... and come back for more as the switch is engaged: their claims race the engage
        flow.hold.unlink()
        switch = switch_engage(
            scope=scope, target=target, reason="race test", actor="dana", via="api"
        )
        wait_until(
            lambda: of_refund_bot(status=Status.BLOCKED) >= STOP_AFTER_BLOCKED,
            "proposals blocked by the switch",
            flow,
        )
    finally:
        flow.hold.unlink(missing_ok=True)
        stop.set()
        proposer.join(timeout=WAIT_SECONDS)
    assert not proposer.is_alive()
    # Let the workers go through what was queued: finish the rest, refuse what is covered.
    wait_until(lambda: settled(switch), "the workers to settle", flow)
    time.sleep(1.0)
    wait_until(lambda: settled(switch), "the workers to settle", flow)
    switch.refresh_from_db()
    return switch


def proof_from_command(switch: KillSwitch) -> dict[str, Any]:
    out = StringIO()
    call_command("killswitch", "proof", str(switch.pk), stdout=out)
    document: dict[str, Any] = json.loads(out.getvalue())
    return document


def test_race__agent_switch_under_load__nothing_of_it_starts_after_engage(flow: Flow) -> None:
    # Given refund-bot and invoice-matcher flowing through two worker processes
    # When on-call stops refund-bot in the middle of it
    switch = race(flow, scope="agent", target="refund-bot")
    engaged_at = switch.engaged_at

    # Then no action of refund-bot has a start time after the engage time
    mine = Action.objects.filter(agent__slug="refund-bot")
    assert mine.filter(started_at__gte=engaged_at).count() == 0
    # ... and the proof, as the command prints it, says so
    document = proof_from_command(switch)
    assert document["started_after_engage"] == 0
    assert document["holds"] is True
    # The race was real: refund-bot had run before, had work queued at the switch that the
    # workers refused (it is still queued, never started), and kept proposing (blocked)
    assert mine.filter(started_at__lt=engaged_at).count() >= ENGAGE_AFTER_STARTED
    held_back = mine.filter(status=Status.QUEUED)
    assert held_back.count() > 0
    assert not held_back.filter(started_at__isnull=False).exists()
    assert document["held_back"] == held_back.count()
    assert document["blocked_since_engage"] == mine.filter(status=Status.BLOCKED).count() > 0
    # What was running at the switch ran to its end
    in_flight = document["running_at_engage"]["actions"]
    assert {entry["status"] for entry in in_flight} <= {"succeeded"}
    # And the other agent, outside the switch's scope, went on starting actions after it
    theirs = Action.objects.filter(agent__slug="invoice-matcher")
    assert theirs.filter(started_at__gte=engaged_at).count() > 0
    assert not theirs.filter(status__in=[Status.QUEUED, Status.BLOCKED]).exists()


def test_race__global_switch_under_load__nothing_starts_after_engage(flow: Flow) -> None:
    switch = race(flow, scope="global", target="")
    engaged_at = switch.engaged_at

    assert Action.objects.filter(started_at__gte=engaged_at).count() == 0
    proof = switch_proof(switch)
    assert proof.started_after == 0
    assert proof.holds
    assert proof_from_command(switch)["started_after_engage"] == 0
    for slug in ("refund-bot", "invoice-matcher"):
        mine = Action.objects.filter(agent__slug=slug)
        assert mine.filter(started_at__lt=engaged_at).exists(), slug
        assert mine.filter(status=Status.QUEUED).exists(), slug
    assert proof.blocked_since == Action.objects.filter(status=Status.BLOCKED).count() > 0
    assert Agent.objects.filter(status=Agent.Status.ACTIVE).count() == 2
