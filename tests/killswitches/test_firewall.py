"""The behavioural firewall: tools outside the agent's scope, a burst far above its usual rate
and repeated forbid denials each quarantine the agent, with the evidence as the reason; on-call
sees it on the console and releasing the quarantine lets the agent act again.

These tests commit (the quarantine runs in its own transaction once the gate's has ended)."""

from __future__ import annotations

import socket
import time
import uuid
from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.actions.gate import GateRefusal, Proposal, action_propose
from apps.actions.models import Action, Status
from apps.audit.models import AuditEvent
from apps.killswitches import counters as counters_module
from apps.killswitches.counters import counters, window
from apps.killswitches.firewall import firewall_proposal
from apps.killswitches.models import KillSwitch
from apps.killswitches.switches import switch_release
from apps.registry.models import Agent
from tests.execution.conftest import own_queue  # noqa: F401 (fixture)
from tests.killswitches.conftest import Desk, propose

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_queue")]


def outside_scope(desk: Desk) -> GateRefusal:
    proposal = Proposal(workflow="refunds", tool="close_account", params={}, subject="acct:7")
    with pytest.raises(GateRefusal) as refused:
        action_propose(key=desk.key, proposal=proposal)
    return refused.value


def quarantine_of(desk: Desk) -> KillSwitch:
    return KillSwitch.objects.get(
        kind=KillSwitch.Kind.QUARANTINE, scope="agent", target="refund-bot"
    )


def test_scope_violations__third_within_window__agent_quarantined(
    desk: Desk, settings: Any
) -> None:
    settings.FIREWALL_SCOPE_VIOLATIONS = 3
    # Given two proposals for a tool refund-bot was never given: refused, counted
    for _ in range(2):
        assert outside_scope(desk).status == 403
    assert Agent.objects.get(pk=desk.agent.pk).status == Agent.Status.ACTIVE
    # When it tries a third time
    refusal = outside_scope(desk)
    # Then that one is refused too, and refund-bot is quarantined with the evidence
    assert refusal.status == 403
    assert Agent.objects.get(pk=desk.agent.pk).status == Agent.Status.QUARANTINED
    switch = quarantine_of(desk)
    assert switch.engaged_by == "system:firewall"
    assert "3 proposal(s) outside its scope" in switch.reason
    assert "tool 'close_account'" in switch.reason
    assert switch.evidence["trigger"] == "scope"
    assert switch.evidence["count"] == 3
    assert AuditEvent.objects.filter(verb="agent.quarantined").count() == 1
    # And from now on its proposals are refused, even good ones
    with pytest.raises(GateRefusal, match="refund-bot is quarantined"):
        propose(desk)


def test_rate__above_floor_with_no_history__quarantined_and_tripping_proposal_blocked(
    desk: Desk, settings: Any
) -> None:
    settings.FIREWALL_RATE_FLOOR = 5
    # Given five proposals in a minute: at the floor, all allowed
    first = [propose(desk, order_id=f"10{i:02d}") for i in range(5)]
    assert {action.status for action in first} == {Status.QUEUED}
    # When a sixth comes in the same minute
    sixth = propose(desk, order_id="1099")
    # Then refund-bot is quarantined before it is recorded, and it is recorded as blocked
    assert sixth.status == Status.BLOCKED
    assert sixth.reasons[0]["policy"] == "kill-switch:agent"
    switch = quarantine_of(desk)
    assert switch.evidence["trigger"] == "rate"
    assert switch.evidence["count"] == 6
    assert switch.evidence["floor"] == 5
    assert "6 proposals in the last 60 s" in switch.reason
    assert Agent.objects.get(pk=desk.agent.pk).status == Agent.Status.QUARANTINED


@pytest.mark.parametrize(
    ("usual", "quarantined"),
    [(20, False), (10, True)],
)
def test_rate__usual_rate_times_multiple__sets_the_limit_above_the_floor(
    desk: Desk, settings: Any, monkeypatch: pytest.MonkeyPatch, usual: int, quarantined: bool
) -> None:
    # Given a floor of 5 and a multiple of 2, and refund-bot making 30 proposals this minute
    settings.FIREWALL_RATE_FLOOR = 5
    settings.FIREWALL_RATE_MULTIPLE = 2.0
    # ... after an hour of `usual` a minute (59 earlier minutes in the trailing hour)
    monkeypatch.setattr(
        "apps.killswitches.firewall.count", lambda subject, windows: [30, 30 + usual * 59]
    )
    # When it proposes
    firewall_proposal(Agent.objects.get(pk=desk.agent.pk))
    # Then it is quarantined only when 30 is above twice its usual rate
    assert KillSwitch.objects.filter(kind="quarantine").exists() is quarantined
    if quarantined:
        evidence = quarantine_of(desk).evidence
        assert (evidence["usual_per_window"], evidence["threshold"]) == (10.0, 20.0)


def test_counters__window_sums_recent_buckets_only() -> None:
    # Subjects of this test alone: the counters live in the suite's Redis
    a, b = f"test-{uuid.uuid4().hex}", f"test-{uuid.uuid4().hex}"
    short = window("w", 10, buckets=10)
    store = counters()
    try:
        assert store.add(a, [short]) == [1]
        assert store.add(a, [short]) == [2]
        assert store.add(b, [short]) == [1]
        assert store.add(a, [short], bump=False) == [2]
        store.clear(a)
        assert store.add(a, [short], bump=False) == [0]
    finally:
        store.clear(a)
        store.clear(b)


def test_counters__two_windows_in_one_command__each_summed_and_its_bucket_expiring() -> None:
    subject = f"test-{uuid.uuid4().hex}"
    short, long = window("s", 10, buckets=10), window("l", 3600, buckets=60)
    store = counters()
    try:
        # Given an earlier bucket of the long window only, as a proposal a minute ago left it
        earlier = counters_module._key(subject, long, long.current(time.time()) - 1)
        store._client.set(earlier, 5)
        # When a proposal is counted in both windows
        totals = store.add(subject, [short, long])
        # Then each window sums its own buckets, and each current bucket expires after its window
        assert totals == [1, 6]
        for each in (short, long):
            current = counters_module._key(subject, each, each.current(time.time()))
            assert 0 < store._client.ttl(current) <= each.seconds + each.bucket
        assert store.add(subject, [short, long], bump=False) == [1, 6]
    finally:
        store.clear(subject)


def test_denials__repeated_forbids__quarantined(desk: Desk, settings: Any) -> None:
    settings.FIREWALL_DENIALS = 3
    # Given refunds above the hard cap, which a forbid policy denies
    denied = [propose(desk, amount_cents=90_000, order_id=f"20{i}") for i in range(3)]
    # Then the third denial quarantines refund-bot, naming the policy
    assert {action.status for action in denied} == {Status.DENIED}
    switch = quarantine_of(desk)
    assert switch.evidence["trigger"] == "denials"
    assert switch.evidence["last"]["policies"] == ["issue_refund-never-above-50000"]
    assert "3 proposals denied by forbid policies" in switch.reason


def test_denials__held_and_allowed__not_counted(desk: Desk, settings: Any) -> None:
    settings.FIREWALL_DENIALS = 2
    propose(desk)  # allowed
    propose(desk, amount_cents=30_000)  # held
    propose(desk, amount_cents=90_000)  # denied once
    assert not KillSwitch.objects.exists()
    assert Agent.objects.get(pk=desk.agent.pk).status == Agent.Status.ACTIVE


def test_quarantine__on_console__then_released__agent_acts_again(
    desk: Desk, settings: Any, client_for: Any
) -> None:
    settings.FIREWALL_SCOPE_VIOLATIONS = 1
    # Given refund-bot quarantined after a scope violation
    outside_scope(desk)
    switch = quarantine_of(desk)
    # Then on-call sees it on the console, with why
    client: Client = client_for(Role.ONCALL)
    html = client.get("/oncall/").content.decode()
    assert 'id="quarantined"' in html
    assert "refund-bot" in html
    assert "outside its scope" in html
    # When on-call releases the quarantine
    released = switch_release(
        switch_id=switch.pk, reason="key rotated, scope fixed", actor="dana", via="api"
    )
    # Then refund-bot is active again and may propose
    assert released.agent_reactivated
    assert Agent.objects.get(pk=desk.agent.pk).status == Agent.Status.ACTIVE
    assert AuditEvent.objects.filter(verb="agent.reactivated").count() == 1
    assert propose(desk).status == Status.QUEUED
    assert Action.objects.filter(status=Status.QUEUED).count() == 1


def test_firewall__disabled__nothing_counted(desk: Desk, settings: Any) -> None:
    settings.FIREWALL_ENABLED = False
    settings.FIREWALL_SCOPE_VIOLATIONS = 1
    outside_scope(desk)
    assert not KillSwitch.objects.exists()


def test_counters_unreachable__proposal_decided_uncounted_with_one_warning_line(
    desk: Desk, settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # Given the firewall's counters on a Redis that does not answer (a closed loopback port)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    settings.FIREWALL_REDIS_URL = f"redis://127.0.0.1:{closed_port}/0"
    counters_module._counters.clear()
    try:
        # When refund-bot proposes a refund
        with caplog.at_level("WARNING", logger="apps.killswitches.counters"):
            action = propose(desk)
    finally:
        counters_module._counters.clear()
    # Then it is decided as always, and the outage is one warning line without a traceback
    assert action.status == Status.QUEUED
    lines = [r for r in caplog.records if r.name == "apps.killswitches.counters"]
    assert lines
    assert all(r.levelname == "WARNING" and r.exc_info is None for r in lines)
    assert "ConnectionError" in lines[0].getMessage()
    assert "proposal let through uncounted" in lines[0].getMessage()
