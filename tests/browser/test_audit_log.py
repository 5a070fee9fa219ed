"""In a real browser, with a real worker: a risk user opens the audit trail, sees the log's latest
signed checkpoint, starts a full verification and watches it end with the verdict."""

from __future__ import annotations

from typing import Any

import pytest
from playwright.sync_api import Page, expect

from apps.accounts.roles import Role
from apps.audit.log import log_integrate
from apps.audit.tasks import progress_key, progress_store
from tests.audit.conftest import record_events
from tests.browser.conftest import sign_in
from tests.conftest import PASSWORD, make_user

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]


def test_audit_page__risk_verifies_the_log__sees_checkpoint_and_verdict(
    page: Page, live_server: Any, celery_worker: str
) -> None:
    # Given bob (risk) and a log of a few entries under a signed checkpoint
    make_user(Role.RISK)
    record_events(4)
    log_integrate()
    progress_store().delete(progress_key(), progress_key() + ":running")
    sign_in(page, live_server, "bob", PASSWORD)

    # When he opens the audit trail
    page.goto(f"{live_server.url}/audit/")
    # Then he sees the latest checkpoint, signed, and that no full verification has run
    expect(page.get_by_test_id("checkpoint")).to_contain_text("Latest checkpoint: 5 entries")
    expect(page.get_by_test_id("chain-status")).to_have_text(
        "The log has not been verified in full yet."
    )
    page.get_by_text("The signed note").click()
    expect(page.get_by_test_id("checkpoint-note")).to_contain_text("escapement.local/audit\n5\n")

    # When he starts a verification
    page.get_by_test_id("verify-now").click()
    # Then the panel follows the worker until its verdict shows
    expect(page.get_by_test_id("chain-status")).to_contain_text(
        "by bob: intact, 5 entries against 1 signed checkpoints", timeout=60_000
    )
    expect(page.get_by_test_id("verify-now")).to_be_visible()
