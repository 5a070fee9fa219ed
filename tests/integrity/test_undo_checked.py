"""An undo is reported by what the system of record says, not by what reached us in time.

The reproduction: a rollback whose undo call timed out was reported "rollback failed" although
the sandbox had reversed the refund. Now an undo without an answer is sent again with the same
idempotency key, which the sandbox answers with the original result: the report says
rolled_back, verified. With no definite answer even then, it says the outcome is unknown (never
"failed"), and the undo can be retried from its row of the report or through the API.

The sandbox runs under the live server, as in tests/execution; the undo reaches it through a
small proxy in this process that forwards each request at once but holds back answers (the
first per idempotency key, or every one) until released: the sandbox has done the work, the
caller's read times out."""

from __future__ import annotations

import re
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import urllib3
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.roles import Role
from apps.actions.execution import action_execute
from apps.actions.models import Action, Status
from apps.audit.models import AuditEvent
from apps.killswitches.models import RollbackRun
from apps.killswitches.rollback import rollback_perform, rollback_preview, rollback_request
from apps.sandbox.models import FaultMode, Order, Refund
from apps.sandbox.selectors import effect_count, refunds_for
from apps.sandbox.services import faults_set
from tests.execution import conftest as execution
from tests.execution.conftest import (
    ROOMY_ORDER,
    ROOMY_ORDER_TOTAL,
    World,
    propose_refund,
    trail_of,
)

# The execution tests' fixtures: the sandbox under the live server, refund-bot wired to it,
# and a queue of the test's own.
sandbox_url = execution.sandbox_url
world = execution.world
own_queue = execution.own_queue

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.usefixtures("own_queue")]

# Generous: the longest the sandbox may take to answer a request that is not held back.
ANSWER_BOUND_SECONDS = 5.0
# How long a held answer waits for its release at most (the test ends it sooner).
HOLD_BOUND_SECONDS = 120.0
FORWARDED = ("Content-Type", "Idempotency-Key", "X-Escapement-Action", "Authorization")


@dataclass
class Seen:
    idempotency_key: str
    held: bool
    replayed: bool


@dataclass
class LateProxy:
    """Forwards POSTs to the sandbox; holds back the answer to the first request per
    idempotency key (`hold="first"`), to every request (`"all"`) or to none (`"none"`)."""

    upstream: str
    hold: str = "first"
    released: threading.Event = field(default_factory=threading.Event)
    seen: list[Seen] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    url: str = ""

    def answer_now(self) -> None:
        """From now on every answer goes out at once, and the held ones are let go."""
        self.hold = "none"
        self.released.set()

    def held_back(self, key: str) -> bool:
        """Whether to hold back the answer to a request with this key (decided on arrival)."""
        first = key not in self.keys
        self.keys.add(key)
        return self.hold == "all" or (self.hold == "first" and first)


@pytest.fixture
def late_proxy(sandbox_url: str) -> Iterator[LateProxy]:
    proxy = LateProxy(upstream=sandbox_url)
    pool = urllib3.PoolManager(retries=False)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            key = self.headers.get("Idempotency-Key", "")
            with lock:
                hold = proxy.held_back(key)
            answer = pool.request(
                "POST",
                f"{proxy.upstream}{self.path}",
                body=body,
                headers={name: self.headers[name] for name in FORWARDED if name in self.headers},
                timeout=ANSWER_BOUND_SECONDS,
            )
            with lock:
                replayed = answer.headers.get("Idempotent-Replayed") == "true"
                proxy.seen.append(Seen(key, hold, replayed))
            if hold:
                proxy.released.wait(HOLD_BOUND_SECONDS)
            try:
                self.send_response(answer.status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(answer.data)))
                self.end_headers()
                self.wfile.write(answer.data)
            except (BrokenPipeError, ConnectionResetError):
                pass  # the caller gave up waiting: the point of holding it back

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    proxy.url = f"http://127.0.0.1:{server.server_address[1]}"
    yield proxy
    proxy.answer_now()
    server.shutdown()
    server.server_close()
    pool.clear()


def refund_behind_proxy(world: World, proxy: LateProxy, *, timeout: float) -> Action:
    """A 30.00 EUR refund of the roomy order that went through; its undo now goes through the
    proxy, with `timeout` seconds to answer."""
    action = propose_refund(world, amount_cents=3_000)
    action_execute(action_id=action.pk)
    action.refresh_from_db()
    assert action.status == Status.SUCCEEDED, action.error
    world.tool.undo_endpoint_url = f"{proxy.url}/refunds/undo"
    world.tool.timeout_seconds = timeout
    world.tool.save(update_fields=["undo_endpoint_url", "timeout_seconds"])
    return action


def rolled_back_last(actor: User | str) -> RollbackRun:
    """On-call rolls back refund-bot's last action, confirmed, and the run goes to its end."""
    chosen = rollback_preview(scope="agent", target="refund-bot", count=1)
    run = rollback_request(
        scope="agent",
        target="refund-bot",
        count=1,
        reason="refund to the wrong order",
        actor=actor,
        expected=[str(action.pk) for action in chosen],
        dispatch=False,
    )
    return rollback_perform(run_id=run.pk)


def test_undo__applied_but_answered_after_the_timeout__reported_rolled_back_verified(
    world: World,
    late_proxy: LateProxy,
    user_for: Any,
) -> None:
    # Given a refund whose undo the sandbox applies at once but answers only after the
    # tool's timeout (its first answer is held back)
    action = refund_behind_proxy(world, late_proxy, timeout=ANSWER_BOUND_SECONDS)
    undo_key = f"{action.downstream_key}-undo"

    # When on-call rolls it back
    run = rolled_back_last(user_for(Role.ONCALL))

    # Then the report says rolled back, verified with the system of record, not failed
    [entry] = run.report
    assert entry["outcome"] == "rolled_back"
    assert entry["detail"] == (
        "order 1003: 39.50 of 39.50 EUR refundable again (verified with the system of record "
        f"after no answer at first (timed out after {ANSWER_BOUND_SECONDS:g}s))"
    )
    stored = Action.objects.get(pk=action.pk)
    assert stored.status == Status.ROLLED_BACK
    assert stored.error == ""
    # ... because the same undo, sent again with the same key, was answered with the first's
    # result (a replay): the sandbox reversed the refund once
    assert [(s.idempotency_key, s.held, s.replayed) for s in late_proxy.seen] == [
        (undo_key, True, False),
        (undo_key, False, True),
    ]
    assert effect_count(undo_key) == 1
    assert refunds_for(ROOMY_ORDER).get().status == Refund.Status.REVERSED
    assert Order.objects.get(pk=ROOMY_ORDER).refundable_cents == ROOMY_ORDER_TOTAL
    # ... and the trail says how it was settled
    event = AuditEvent.objects.get(verb="action.rolled_back", target_id=str(action.pk))
    assert event.payload["tries"] == 2
    assert event.payload["checked"].startswith("verified with the system of record")
    assert "action.rollback_failed" not in trail_of(action)


def test_undo__no_answer_even_when_sent_again__outcome_unknown_then_retried_from_its_row(
    world: World,
    late_proxy: LateProxy,
    user_for: Any,
    client_for: Any,
) -> None:
    # Given a refund whose undo the sandbox applies but never answers in time, however often
    late_proxy.hold = "all"
    action = refund_behind_proxy(world, late_proxy, timeout=1.0)
    undo_key = f"{action.downstream_key}-undo"

    # When on-call rolls it back
    run = rolled_back_last(user_for(Role.ONCALL))

    # Then the report says the outcome is unknown, not that it failed, and the action is still
    # succeeded (the sandbox did reverse the refund: only the answer never came)
    [entry] = run.report
    assert entry["outcome"] == "undo_unknown"
    assert entry["detail"].startswith(
        "undo outcome unknown: the system of record did not answer (timed out after 1s, 3 tries)"
    )
    assert Action.objects.get(pk=action.pk).status == Status.SUCCEEDED
    assert [s.idempotency_key for s in late_proxy.seen] == [undo_key] * 3
    assert effect_count(undo_key) == 1
    unknown = AuditEvent.objects.get(verb="action.undo_unknown", target_id=str(action.pk))
    assert unknown.payload["status"] == Status.SUCCEEDED
    # ... and the row offers a retry
    client = client_for(Role.ONCALL, enforce_csrf_checks=True)
    page = client.get(f"/oncall/rollbacks/{run.pk}/").content.decode()
    assert "undo outcome unknown" in page
    retry_url = f"/oncall/rollbacks/{run.pk}/actions/{action.pk}/retry/"
    assert f'action="{retry_url}"' in page

    # When the system of record answers again and on-call retries from the row
    late_proxy.answer_now()
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf
    answer = client.post(retry_url, {"csrfmiddlewaretoken": csrf.group(1)}, follow=True)

    # Then the row says rolled back, and still one reversal was made
    assert answer.status_code == 200
    row = RollbackRun.objects.get(pk=run.pk).report[0]
    assert (row["outcome"], row["retries"]) == ("rolled_back", 1)
    assert "Undo of order:1003 retried: rolled_back." in answer.content.decode()
    assert Action.objects.get(pk=action.pk).status == Status.ROLLED_BACK
    assert effect_count(undo_key) == 1
    retried = AuditEvent.objects.get(verb="rollback.retried")
    assert (retried.actor, retried.payload["was"], retried.payload["outcome"]) == (
        "dana",
        "undo_unknown",
        "rolled_back",
    )


def test_undo__failed_then_retried_from_its_row__rolled_back_and_audited(
    world: World,
    late_proxy: LateProxy,
    user_for: Any,
    client_for: Any,
) -> None:
    # Given a refund, and a sandbox answering 503 to everything when it is rolled back
    late_proxy.hold = "none"
    action = refund_behind_proxy(world, late_proxy, timeout=ANSWER_BOUND_SECONDS)
    faults_set(mode=FaultMode.FAILING)
    try:
        run = rolled_back_last(user_for(Role.ONCALL))
    finally:
        faults_set(mode=FaultMode.HEALTHY)
    # ... so the undo failed: the sandbox answered, and did nothing
    [entry] = run.report
    assert (entry["outcome"], entry["detail"]) == (
        "rollback_failed",
        "system of record answered 503",
    )
    assert Action.objects.get(pk=action.pk).status == Status.ROLLBACK_FAILED
    assert refunds_for(ROOMY_ORDER).get().status == Refund.Status.ISSUED

    # When, the sandbox healthy again, on-call presses "Retry undo" on the row
    client = client_for(Role.ONCALL, enforce_csrf_checks=True)
    page = client.get(f"/oncall/rollbacks/{run.pk}/").content.decode()
    assert page.count('data-testid="retry-undo"') == 1
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page)
    assert csrf
    retry_url = f"/oncall/rollbacks/{run.pk}/actions/{action.pk}/retry/"
    without_token = client.post(retry_url)
    assert without_token.status_code == 403
    answer = client.post(retry_url, {"csrfmiddlewaretoken": csrf.group(1)})

    # Then the refund is reversed, the row says so (and offers no retry any more)
    assert answer.status_code == 302
    assert answer["Location"] == f"/oncall/rollbacks/{run.pk}/"
    stored = Action.objects.get(pk=action.pk)
    assert (stored.status, stored.error) == (Status.ROLLED_BACK, "")
    assert refunds_for(ROOMY_ORDER).get().status == Refund.Status.REVERSED
    assert effect_count(f"{action.downstream_key}-undo") == 1
    page = client.get(answer["Location"]).content.decode()
    assert "retry-undo" not in page
    assert RollbackRun.objects.get(pk=run.pk).report[0]["outcome"] == "rolled_back"
    # ... and the trail has the failure, then the retry that undid it, by the person who did
    assert trail_of(action)[-2:] == ["action.rollback_failed", "action.rolled_back"]
    event = AuditEvent.objects.get(verb="action.rolled_back", target_id=str(action.pk))
    assert (event.actor, event.payload["from"], event.payload["retry"]) == (
        "dana",
        Status.ROLLBACK_FAILED,
        True,
    )
    assert AuditEvent.objects.filter(verb="rollback.retried").count() == 1
    # And a second retry of the settled row is refused, calling nothing
    calls = len(late_proxy.seen)
    again = client.post(retry_url, {"csrfmiddlewaretoken": csrf.group(1)}, follow=True)
    assert "only a failed or unknown undo can be retried" in again.content.decode()
    assert len(late_proxy.seen) == calls


def test_undo_api__failed_then_unknown_then_retried__rolled_back_once(
    world: World,
    late_proxy: LateProxy,
    client_for: Any,
) -> None:
    # Given a refund, and a sandbox answering 503 to everything when on-call rolls it back
    # through the API
    late_proxy.hold = "none"
    action = refund_behind_proxy(world, late_proxy, timeout=1.0)
    url = f"/api/v1/actions/{action.pk}/rollback"
    client: Client = client_for(Role.ONCALL)
    faults_set(mode=FaultMode.FAILING)
    try:
        failed = client.post(url)
    finally:
        faults_set(mode=FaultMode.HEALTHY)
    assert failed.status_code == 200, failed.content
    assert (failed.json()["status"], failed.json()["error"]) == (
        Status.ROLLBACK_FAILED,
        "system of record answered 503",
    )

    # When on-call retries while the sandbox applies the undo but never answers in time
    late_proxy.hold = "all"
    unknown = client.post(url)

    # Then the answer says the outcome is unknown (504), and the action keeps its status
    assert unknown.status_code == 504, unknown.content
    assert unknown.json()["detail"].startswith(
        "Undo outcome unknown: the system of record did not answer (timed out after 1s, 3 tries)"
    )
    assert unknown.json()["errors"] == []
    assert Action.objects.get(pk=action.pk).status == Status.ROLLBACK_FAILED

    # When the system of record answers again and on-call retries once more
    late_proxy.answer_now()
    retried = client.post(url)

    # Then it is rolled back, by the replayed answer of the undo applied the time before
    assert retried.status_code == 200, retried.content
    assert (retried.json()["status"], retried.json()["error"]) == (Status.ROLLED_BACK, "")
    assert late_proxy.seen[-1].replayed is True
    assert effect_count(f"{action.downstream_key}-undo") == 1
    assert trail_of(action)[-3:] == [
        "action.rollback_failed",
        "action.undo_unknown",
        "action.rolled_back",
    ]
