"""The claim: queued -> running in one statement with the kill-switch check, a start time and
a lease."""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable

import pytest
from django.conf import settings
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from apps.actions import execution
from apps.actions.execution import Claim, ClaimResult, _claim, action_execute
from apps.actions.models import Action, Status
from apps.audit.models import AuditEvent
from apps.killswitches.coverage import fence_for_engage
from apps.killswitches.models import KillSwitch
from apps.killswitches.switches import switch_engage
from tests.execution.conftest import own_queue  # noqa: F401 (fixture)
from tests.factories import make_agent
from tests.killswitches.conftest import Desk, executed, propose

pytestmark = pytest.mark.django_db


def test_claim__queued_and_not_covered__running_with_start_lease_and_audit_event(
    desk: Desk,
) -> None:
    action = propose(desk)

    claim = _claim(action.pk)

    assert claim.verdict is Claim.CLAIMED
    assert claim.action is not None
    stored = Action.objects.get(pk=action.pk)
    assert stored.status == Status.RUNNING
    assert stored.started_at is not None
    assert stored.lease_expires_at is not None
    lease = (stored.lease_expires_at - stored.started_at).total_seconds()
    assert lease == pytest.approx(
        desk.refund_tool.timeout_seconds + settings.ACTION_LEASE_MARGIN_SECONDS, abs=1e-3
    )
    # The claimed action handed back is the row as it now is (the worker runs the tool from it).
    assert claim.action.status == Status.RUNNING
    assert claim.action.started_at == stored.started_at
    assert claim.action.lease_expires_at == stored.lease_expires_at
    assert claim.action.tool.slug == "issue_refund"
    event = AuditEvent.objects.filter(target_id=str(action.pk), verb="action.running").get()
    assert event.actor == "system:worker"
    assert event.payload["from"] == Status.QUEUED
    assert event.payload["to"] == Status.RUNNING


def test_claim__twice__second_finds_it_running_and_starts_nothing(desk: Desk) -> None:
    action = propose(desk)
    first = _claim(action.pk)
    started = Action.objects.get(pk=action.pk).started_at

    second = _claim(action.pk)

    assert first.verdict is Claim.CLAIMED
    assert (second.verdict, second.status) == (Claim.NOT_QUEUED, Status.RUNNING)
    assert Action.objects.get(pk=action.pk).started_at == started
    assert AuditEvent.objects.filter(target_id=str(action.pk), verb="action.running").count() == 1


def test_claim__switch_on_another_agent__claimed(desk: Desk) -> None:
    action = propose(desk)
    make_agent("other-bot", owner=desk.owner, workflows=[desk.workflow], tools=[desk.refund_tool])
    switch_engage(scope="agent", target="other-bot", reason="stop", actor="dana", via="api")
    assert _claim(action.pk).verdict is Claim.CLAIMED


def test_claim__covered__refused_and_nothing_written(desk: Desk) -> None:
    action = propose(desk)
    switch_engage(scope="workflow", target="refunds", reason="stop", actor="dana", via="api")
    events = AuditEvent.objects.count()

    claim = _claim(action.pk)

    assert (claim.verdict, claim.status) == (Claim.REFUSED, Status.QUEUED)
    stored = Action.objects.get(pk=action.pk)
    assert (stored.status, stored.started_at, stored.lease_expires_at) == (
        Status.QUEUED,
        None,
        None,
    )
    assert AuditEvent.objects.count() == events


def test_claim__covered__refused_by_the_look_in_one_round_trip(desk: Desk) -> None:
    action = propose(desk)
    switch_engage(scope="agent", target="refund-bot", reason="stop", actor="dana", via="api")

    with CaptureQueriesContext(connection) as sent:
        claim = _claim(action.pk)

    assert claim.verdict is Claim.REFUSED
    assert len(sent) == 1, [query["sql"] for query in sent]
    assert sent[0]["sql"].startswith("SELECT * FROM actions_claim_look(")
    assert action.pk.hex in sent[0]["sql"]


def test_claim__not_covered__looks_then_claims(desk: Desk) -> None:
    action = propose(desk)

    with CaptureQueriesContext(connection) as sent:
        claim = _claim(action.pk)

    assert claim.verdict is Claim.CLAIMED
    called = [query["sql"].split("(")[0] for query in sent if "actions_claim" in query["sql"]]
    assert called == ["SELECT * FROM actions_claim_look", "SELECT * FROM actions_claim"]


def test_execute__finished_action__not_run_again(desk: Desk) -> None:
    action = executed(desk)
    outcome = action_execute(action_id=action.pk)
    assert (outcome.status, outcome.note) == (Status.SUCCEEDED, "already finished")


def test_execute__unknown_action__does_not_exist() -> None:
    with pytest.raises(Action.DoesNotExist):
        action_execute(action_id=uuid.uuid4())


def _waiting_on_a_lock(pid: int) -> bool:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE pid = %s AND wait_event_type = 'Lock'",
            [pid],
        )
        row = cursor.fetchone()
    assert row is not None
    return bool(row[0])


def claim_while_held(
    action_id: uuid.UUID,
    hold: Callable[[], object],
    *,
    after_the_look: pytest.MonkeyPatch | None = None,
    sent: list[str] | None = None,
) -> ClaimResult:
    """Claim `action_id` on a thread of its own while another thread has run `hold` in a
    transaction it keeps open; once the claim waits on a lock, that transaction commits.
    With `after_the_look` (a monkeypatch), `hold` runs only once the claim's look has found the
    action claimable, so that it is the claim itself that waits. The claim's statements are
    added to `sent`. Returns what the claim found."""
    held, finish = threading.Event(), threading.Event()
    looked = threading.Event()
    if after_the_look is not None:
        real_look = execution._look

        def look_then_wait(action_id: uuid.UUID) -> tuple[str, bool]:
            found = real_look(action_id)
            looked.set()
            assert held.wait(10)
            return found

        after_the_look.setattr(execution, "_look", look_then_wait)
    else:
        looked.set()
    committed_in_time: list[bool] = []
    found: list[ClaimResult] = []
    backend: list[int] = []
    connected = threading.Event()

    def holder() -> None:
        try:
            with transaction.atomic():
                hold()
                held.set()
                committed_in_time.append(finish.wait(60))
        finally:
            connection.close()

    def claimer() -> None:
        try:
            connection.ensure_connection()
            backend.append(connection.connection.info.backend_pid)
            connected.set()
            with CaptureQueriesContext(connection) as captured:
                found.append(_claim(action_id))
            if sent is not None:
                sent.extend(query["sql"] for query in captured)
        finally:
            connection.close()

    holding = threading.Thread(target=holder)
    claiming = threading.Thread(target=claimer)
    if after_the_look is None:
        holding.start()
        assert held.wait(10)
        claiming.start()
    else:
        claiming.start()
        assert looked.wait(10)
        holding.start()
    assert connected.wait(10)
    deadline = time.monotonic() + 30
    while not _waiting_on_a_lock(backend[0]):
        assert time.monotonic() < deadline, "the claim never waited"
        time.sleep(0.01)
    finish.set()
    holding.join(30)
    claiming.join(30)
    assert committed_in_time == [True]
    assert len(found) == 1
    return found[0]


def engaging(scope: str, target: str) -> Callable[[], None]:
    """An engage's first steps, for `claim_while_held`: the fence taken, the switch written."""

    def engage() -> None:
        fence_for_engage()
        KillSwitch.objects.create(
            scope=scope,
            target=target,
            reason="stop",
            engaged_by="dana",
            engaged_at=timezone.now(),
        )

    return engage


@pytest.mark.django_db(transaction=True)
def test_claim__drained_while_the_claim_waits_for_the_row__lost_and_not_started(
    desk: Desk,
    own_queue: str,  # noqa: F811 (fixture: the session's worker must not claim it first)
) -> None:
    # Given a queued action, and a drain that has cancelled it but not yet committed
    action = propose(desk)

    def drain() -> None:
        Action.objects.filter(pk=action.pk).update(status=Status.CANCELLED)

    # When a worker claims it meanwhile (its statement waits for the drain's row lock)
    claim = claim_while_held(action.pk, drain)

    # Then the claim sees the cancellation and starts nothing
    assert (claim.verdict, claim.status) == (Claim.LOST, Status.CANCELLED)
    stored = Action.objects.get(pk=action.pk)
    assert (stored.status, stored.started_at) == (Status.CANCELLED, None)


@pytest.mark.django_db(transaction=True)
def test_claim__waiting_at_the_fence_while_a_switch_commits__refused(
    desk: Desk,
    own_queue: str,  # noqa: F811 (fixture: the session's worker must not claim it first)
) -> None:
    # Given a queued action, and an engage holding the fence with its switch not yet committed
    action = propose(desk)

    # When a worker claims the action meanwhile (its look waits at the fence)
    sent: list[str] = []
    claim = claim_while_held(action.pk, engaging("agent", "refund-bot"), sent=sent)

    # Then the look, whose statement runs after the switch committed, sees it: refused with
    # no further statement
    assert (claim.verdict, claim.status) == (Claim.REFUSED, Status.QUEUED)
    assert len(sent) == 1
    stored = Action.objects.get(pk=action.pk)
    assert (stored.status, stored.started_at) == (Status.QUEUED, None)


@pytest.mark.django_db(transaction=True)
def test_claim__switch_engaged_between_the_look_and_the_claim__refused(
    desk: Desk,
    monkeypatch: pytest.MonkeyPatch,
    own_queue: str,  # noqa: F811 (fixture: the session's worker must not claim it first)
) -> None:
    # Given a queued action whose look found it claimable, and then an engage holding the
    # fence with its switch not yet committed
    action = propose(desk)

    # When the claim itself waits at the fence
    claim = claim_while_held(
        action.pk, engaging("tool", "issue_refund"), after_the_look=monkeypatch
    )

    # Then the claim statement, run after the switch committed, sees it
    assert (claim.verdict, claim.status) == (Claim.REFUSED, Status.QUEUED)
    stored = Action.objects.get(pk=action.pk)
    assert (stored.status, stored.started_at) == (Status.QUEUED, None)
