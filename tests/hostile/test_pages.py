"""Hostile text on the pages people use: what an agent writes (reasoning, subject, params,
evidence) is shown escaped, never as markup; and a page's POST without its CSRF token is refused
and changes nothing, while the same POST with the token works (so the refusal is the token's)."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.killswitches.models import KillSwitch
from apps.reviews.models import ReviewItem
from tests.actions.conftest import GOOD_PARAMS, proposal_body, propose
from tests.conftest import PASSWORD
from tests.hostile.conftest import Hostile

pytestmark = pytest.mark.django_db

SCRIPT = '<script>alert("pwned")</script>'
IMG = '"><img src=x onerror=alert(1)>'
SQL = "'; DROP TABLE reviews_reviewitem; --"


def held_item(client: Client, hostile: Hostile) -> ReviewItem:
    """refund-bot proposes a 300.00 EUR refund (held for a person) full of hostile text."""
    answer = propose(
        client,
        hostile.agent_key,
        proposal_body(
            subject=f"order:{IMG}",
            reasoning=f"{SCRIPT}\n{SQL}",
            params={**GOOD_PARAMS, "amount_cents": 30_000, "reason": SCRIPT},
            evidence=[{"snippet": IMG, "source": SCRIPT}],
            idempotency_key="hostile-page",
        ),
    )
    assert answer.status_code == 201, answer.content
    assert answer.json()["decision"] == "hold"
    return ReviewItem.objects.get(action_id=answer.json()["id"])


def assert_escaped(html: str) -> None:
    assert "<script>alert(" not in html
    assert "<img src=x onerror" not in html
    assert "&lt;script&gt;alert(&quot;pwned&quot;)&lt;/script&gt;" in html
    assert "&lt;img src=x onerror=alert(1)&gt;" in html


def test_review_item_page__hostile_reasoning_params_evidence__shown_escaped(
    client: Client, hostile: Hostile, client_for: Any
) -> None:
    # Given a held refund whose reasoning, subject, params and evidence carry markup and SQL
    item = held_item(client, hostile)

    # When a supervisor opens its review item
    page = client_for(Role.SUPERVISOR).get(f"/reviews/{item.pk}/")

    # Then the page shows every piece of it as text, escaped, and the SQL as plain text
    assert page.status_code == 200
    html = page.content.decode()
    assert_escaped(html)
    assert "&#x27;; DROP TABLE reviews_reviewitem; --" in html
    assert ReviewItem.objects.filter(pk=item.pk).exists()


def test_review_queue_and_flight_recorder__hostile_subject__shown_escaped(
    client: Client, hostile: Hostile, client_for: Any
) -> None:
    # Given a held refund whose subject carries markup
    held_item(client, hostile)

    # When a supervisor opens the queue and risk opens the subject's flight recorder
    queue = client_for(Role.SUPERVISOR).get("/reviews/")
    recorder = client_for(Role.RISK).get("/audit/flight-recorder/", {"subject": f"order:{IMG}"})

    # Then both show the subject escaped
    for page in (queue, recorder):
        assert page.status_code == 200
        html = page.content.decode()
        assert "<img src=x onerror" not in html
        assert "&lt;img src=x onerror=alert(1)&gt;" in html


def signed_in(role: Role, user_for: Any) -> Client:
    user_for(role)
    client = Client(enforce_csrf_checks=True)
    assert client.login(username=user_for(role).username, password=PASSWORD)
    return client


def test_claim__post_without_csrf_token__403_and_not_claimed(
    client: Client, hostile: Hostile, user_for: Any
) -> None:
    # Given a held item, and alice (supervisor) signed in with CSRF checks enforced
    item = held_item(client, hostile)
    alice = signed_in(Role.SUPERVISOR, user_for)

    # When she claims it without the token
    refused = alice.post(f"/reviews/{item.pk}/claim")

    # Then it is refused and the item stays unclaimed
    assert refused.status_code == 403
    item.refresh_from_db()
    assert item.claimed_by_id is None

    # When she opens the page (which sets the token) and claims it with the token
    alice.get(f"/reviews/{item.pk}/")
    token = alice.cookies["csrftoken"].value
    accepted = alice.post(f"/reviews/{item.pk}/claim", headers={"X-CSRFToken": token})

    # Then it is hers
    assert accepted.status_code in (200, 302)
    item.refresh_from_db()
    assert item.claimed_by_id == user_for(Role.SUPERVISOR).pk


def test_engage_page__post_without_csrf_token__403_and_no_switch(
    hostile: Hostile, user_for: Any
) -> None:
    # Given dana (on-call) signed in with CSRF checks enforced
    dana = signed_in(Role.ONCALL, user_for)
    form = {
        "engage-scope": "global",
        "engage-target": "",
        "engage-reason": "forged request",
        "confirm": "yes",
    }
    before = KillSwitch.objects.filter(released_at__isnull=True).count()

    # When a global stop is posted without the token
    refused = dana.post("/oncall/engage/", form)

    # Then nothing is engaged
    assert refused.status_code == 403
    assert KillSwitch.objects.filter(released_at__isnull=True).count() == before

    # When the same form is posted with the token from the console
    dana.get("/oncall/")
    accepted = dana.post(
        "/oncall/engage/", {**form, "csrfmiddlewaretoken": dana.cookies["csrftoken"].value}
    )

    # Then the switch is engaged
    assert accepted.status_code in (200, 302)
    assert KillSwitch.objects.filter(released_at__isnull=True, scope="global").count() == 1


def test_login__post_without_csrf_token__403() -> None:
    client = Client(enforce_csrf_checks=True)
    answer = client.post("/accounts/login/", {"username": "erin", "password": PASSWORD})
    assert answer.status_code == 403
    assert "_auth_user_id" not in client.session
