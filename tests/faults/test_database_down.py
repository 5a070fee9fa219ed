"""PostgreSQL stops while the web keeps serving: the API answers 503 with a clear JSON body,
pages answer a 503 page, /healthz says the database is down; when PostgreSQL comes back the same
web process serves again by itself, and the proposal refused during the outage goes through
once when resent."""

from __future__ import annotations

import json
import uuid
from typing import Any

import pytest
import urllib3
from django.contrib.auth.models import User
from django.test import Client
from kombu import Queue

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.registry.services import agent_key_create
from controlplane.celery import app as celery_app
from tests.actions.conftest import proposal_body
from tests.factories import make_agent, make_published_book, make_tool, make_workflow
from tests.faults.conftest import Relay, web_start, web_stop

pytestmark = pytest.mark.django_db(transaction=True)

# A ceiling for one request to the web process: never reached on a healthy run, busy machine or
# not (the answers asserted here come at once, the database up or down).
REQUEST_TIMEOUT = 60


def post_proposal(url: str, key: str, idempotency_key: str) -> urllib3.BaseHTTPResponse:
    return urllib3.request(
        "POST",
        f"{url}/api/v1/actions",
        body=json.dumps(proposal_body(idempotency_key=idempotency_key)).encode(),
        headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"},
        timeout=REQUEST_TIMEOUT,
        retries=False,
    )


def get(url: str, path: str, cookie: str = "") -> urllib3.BaseHTTPResponse:
    headers = {"Cookie": f"sessionid={cookie}"} if cookie else {}
    return urllib3.request(
        "GET",
        f"{url}{path}",
        headers=headers,
        timeout=REQUEST_TIMEOUT,
        retries=False,
        redirect=False,
    )


def test_postgres_stops_and_returns__503_with_clear_body_then_recovers_by_itself(
    database_relay: tuple[Relay, str], user_for: Any
) -> None:
    relay, database_url = database_relay
    # Given refund-bot with a key, the refunds book, a signed-in supervisor, and a web process
    # whose database connections go through the relay (tasks go to a queue nobody reads)
    owner: User = user_for(Role.RISK)
    workflow = make_workflow()
    tool = make_tool()
    agent = make_agent(owner=user_for(Role.ADMIN), workflows=[workflow], tools=[tool])
    make_published_book(workflow=workflow, author=owner)
    key = agent_key_create(agent=agent, actor="system:test").key
    browser = Client()
    browser.force_login(user_for(Role.SUPERVISOR))
    session = browser.cookies["sessionid"].value
    queue = f"test-faults-{uuid.uuid4().hex[:8]}"
    web = web_start(env={"DATABASE_URL": database_url, "CELERY_QUEUE": queue})
    try:
        before = post_proposal(web.url, key, "before-outage")
        assert before.status == 201, before.data
        assert get(web.url, "/reviews/", session).status == 200

        # When PostgreSQL stops
        relay.stop()

        # Then a proposal is answered 503 with the API's error body, saying why and what to do
        during = post_proposal(web.url, key, "during-outage")
        assert during.status == 503, during.data
        assert during.headers["Content-Type"] == "application/json"
        assert during.headers["Retry-After"] == "5"
        body = json.loads(during.data)
        assert body["errors"] == []
        assert body["detail"].startswith("The database is unavailable. Try again shortly")
        # ... a page is a 503 page that says the same to a person
        page = get(web.url, "/reviews/", session)
        assert page.status == 503
        assert b"The database is unavailable" in page.data
        # ... and /healthz names the database as the failing check
        health = get(web.url, "/healthz")
        assert health.status == 503
        assert json.loads(health.data)["checks"]["database"]["ok"] is False

        # When PostgreSQL is back
        relay.start()

        # Then the same web process serves again, without a restart: the proposal refused during
        # the outage is made now, once, and the page opens
        resent = post_proposal(web.url, key, "during-outage")
        assert resent.status == 201, resent.data
        again = post_proposal(web.url, key, "during-outage")
        assert again.status == 200
        assert json.loads(again.data)["id"] == json.loads(resent.data)["id"]
        assert get(web.url, "/reviews/", session).status == 200
        assert web.process.poll() is None
        assert Action.objects.filter(idempotency_key="during-outage").count() == 1
        assert "database unavailable: POST /api/v1/actions answered 503" in web.log()
    finally:
        web_stop(web)
        with celery_app.connection_for_write() as connection:
            Queue(queue).bind(connection.default_channel).delete()
