"""The audit page shows the log's latest checkpoint and its last full verification, verifies
nothing on load, and starts a verification on a worker ("Verify now"), showing its progress."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.accounts.roles import Role
from apps.audit.log import log_integrate
from apps.audit.models import AuditEvent
from apps.audit.tasks import progress_key, progress_store, verify
from tests.audit.conftest import out_of_band, record_events


@pytest.fixture(autouse=True)
def _no_verification_running(db: Any) -> Iterator[None]:
    """No verification state left from another run on a database of the same name."""
    keys = (progress_key(), progress_key() + ":running")
    progress_store().delete(*keys)
    yield
    progress_store().delete(*keys)


# Far above what a healthy worker needs for a handful of entries on a busy machine.
VERIFY_SECONDS = 60


@pytest.mark.django_db
def test_page__shows_the_latest_checkpoint_and_verifies_nothing_on_load(client_for: Any) -> None:
    client = client_for(Role.RISK)
    record_events(3)
    log_integrate()
    record_events(1)
    with CaptureQueriesContext(connection) as queries:
        html = client.get("/audit/").content.decode()
    assert "Latest checkpoint: <strong>4</strong> entries" in html  # the risk user's creation too
    assert "1 event waiting to enter the log." in html
    assert "The log has not been verified in full yet." in html
    assert 'data-testid="verify-now"' in html
    assert not [q for q in queries.captured_queries if "sha256" in q["sql"]]


@pytest.mark.django_db
def test_page__after_a_verification__its_verdict(client_for: Any, user_for: Any) -> None:
    client = client_for(Role.RISK)
    record_events(2)
    log_integrate()
    verify(user_for(Role.RISK).username)
    html = client.get("/audit/").content.decode()
    assert "by bob: intact, 3 entries against 1 signed checkpoints" in html
    # When the log is changed and verified again, the page says where it broke
    out_of_band("UPDATE audit_auditevent SET actor = 'mallory' WHERE verb = 'test.event'")
    verify(user_for(Role.RISK).username)
    html = client.get("/audit/").content.decode()
    assert "found the log broken: entry 1 (event #" in html
    assert AuditEvent.objects.filter(verb="audit.verified").count() == 2


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.FINANCE, Role.ONCALL, None])
def test_page_and_verify__other_roles__refused(client_for: Any, role: Role | None) -> None:
    client = client_for(role)
    assert client.get("/audit/").status_code == 403
    assert client.get("/audit/verification/").status_code == 403
    assert client.post("/audit/verify/").status_code == 403


@pytest.mark.django_db
def test_verify_now__twice__one_verification_sent(
    client_for: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    sent: list[tuple[str, ...]] = []
    monkeypatch.setattr("apps.audit.tasks.task_send", lambda *args: sent.append(args))
    client = client_for(Role.RISK)
    first = client.post("/audit/verify/", follow=True).content.decode()
    again = client.post("/audit/verify/", follow=True).content.decode()
    assert "Verification started" in first
    assert "A verification is already running." in again
    assert sent == [("audit.verify", "bob")]
    assert "Verification waiting for a worker" in again


@pytest.mark.django_db
def test_verify__a_get__not_allowed(client_for: Any) -> None:
    assert client_for(Role.RISK).get("/audit/verify/").status_code == 405


@pytest.mark.django_db
def test_verify__without_csrf_token__refused(user_for: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_for(Role.RISK))
    assert client.post("/audit/verify/").status_code == 403


@pytest.mark.django_db(transaction=True)
def test_verify_now__runs_on_a_worker_and_the_panel_follows_it(
    client_for: Any, celery_worker: str
) -> None:
    client = client_for(Role.RISK)
    record_events(5)
    log_integrate()
    # When the risk user asks for a verification
    assert "Verification started" in client.post("/audit/verify/", follow=True).content.decode()
    # Then the panel, polled as the page polls it, ends with the worker's verdict
    deadline = time.monotonic() + VERIFY_SECONDS
    panel = ""
    while time.monotonic() < deadline:
        panel = client.get("/audit/verification/", headers={"HX-Request": "true"}).content.decode()
        if "Last full verification" in panel:
            break
        time.sleep(0.2)
    assert "intact, 6 entries against 1 signed checkpoints" in panel
    assert 'data-testid="verify-now"' in panel
