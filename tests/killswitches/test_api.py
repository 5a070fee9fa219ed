"""The on-call API: engage, release, proof, drain and rollback, with a staff token or a
signed-in session (CSRF enforced), for the oncall role only; bad input names the field."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.accounts.staff_tokens import staff_token_create
from apps.actions.models import Action, Status
from apps.killswitches.models import KillSwitch
from tests.killswitches.conftest import Desk, executed, propose

pytestmark = pytest.mark.django_db

ENGAGE = {"scope": "agent", "target": "refund-bot", "reason": "refund loop on order 1042"}


@pytest.fixture
def token(user_for: Any) -> str:
    user_for(Role.ONCALL)
    return staff_token_create(username="dana", actor="system:test").token


def post(path: str, body: dict[str, Any], token: str, client: Client | None = None) -> Any:
    return (client or Client()).post(
        f"/api/v1{path}",
        json.dumps(body),
        content_type="application/json",
        headers={"Authorization": f"Bearer {token}"},
    )


def test_engage__staff_token__201_and_proposals_blocked(desk: Desk, token: str) -> None:
    response = post("/killswitches", ENGAGE, token)
    assert response.status_code == 201, response.content
    body = response.json()
    assert (body["scope"], body["target"], body["engaged"]) == ("agent", "refund-bot", True)
    assert body["engaged_by"] == "dana"
    assert body["engaged_via"] == "api"
    assert propose(desk).status == Status.BLOCKED


def test_engage__twice__409(desk: Desk, token: str) -> None:
    post("/killswitches", ENGAGE, token)
    response = post("/killswitches", ENGAGE, token)
    assert response.status_code == 409
    assert "already stopped" in response.json()["detail"]


@pytest.mark.parametrize(
    ("body", "field", "message"),
    [
        (ENGAGE | {"scope": "planet"}, "scope", "unknown scope 'planet'"),
        (ENGAGE | {"target": "ghost-bot"}, "target", "no agent 'ghost-bot' is registered"),
        (ENGAGE | {"reason": ""}, "reason", "say why"),
        ({"scope": "agent", "target": "refund-bot"}, "reason", "Field required"),
    ],
)
def test_engage__bad_input__422_naming_the_field(
    desk: Desk, token: str, body: dict[str, Any], field: str, message: str
) -> None:
    response = post("/killswitches", body, token)
    assert response.status_code == 422
    errors = response.json()["errors"]
    assert errors[0]["field"] == field
    assert message in errors[0]["message"]
    assert not KillSwitch.objects.exists()


def test_session__oncall_with_csrf__engages_without_it_refused(desk: Desk, user_for: Any) -> None:
    client = Client(enforce_csrf_checks=True)
    client.force_login(user_for(Role.ONCALL))
    # Without the CSRF token: refused, nothing engaged
    refused = client.post("/api/v1/killswitches", ENGAGE, content_type="application/json")
    assert refused.status_code == 403
    assert refused.json()["errors"][0]["field"] == "X-CSRFToken"
    assert not KillSwitch.objects.exists()
    # With it (from the cookie a page sets): engaged
    client.get("/oncall/")
    csrf = client.cookies["csrftoken"].value
    response = client.post(
        "/api/v1/killswitches", ENGAGE, content_type="application/json",
        headers={"X-CSRFToken": csrf},
    )  # fmt: skip
    assert response.status_code == 201, response.content


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.RISK, Role.FINANCE, Role.ADMIN])
def test_engage__other_roles__403(desk: Desk, client_for: Any, role: Role) -> None:
    response = client_for(role).post(
        "/api/v1/killswitches", ENGAGE, content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json()["detail"] == "This needs the oncall role."


def test_engage__anonymous__401(desk: Desk) -> None:
    response = Client().post("/api/v1/killswitches", ENGAGE, content_type="application/json")
    assert response.status_code == 401


def test_release_and_proof__json(desk: Desk, token: str) -> None:
    switch_id = post("/killswitches", ENGAGE, token).json()["id"]
    propose(desk)
    proof = Client().get(
        f"/api/v1/killswitches/{switch_id}/proof", headers={"Authorization": f"Bearer {token}"}
    )
    assert proof.status_code == 200
    assert proof.json()["started_after_engage"] == 0
    assert proof.json()["blocked_since_engage"] == 1
    assert proof.json()["holds"] is True

    released = post(f"/killswitches/{switch_id}/release", {"reason": "fixed"}, token)
    assert released.status_code == 200
    assert released.json()["engaged"] is False
    assert released.json()["release_reason"] == "fixed"
    again = post(f"/killswitches/{switch_id}/release", {"reason": "fixed"}, token)
    assert again.status_code == 409
    missing = post("/killswitches/9999/release", {"reason": "x"}, token)
    assert missing.status_code == 404


def test_drain__api__report_per_action(desk: Desk, token: str) -> None:
    held = propose(desk, amount_cents=30_000)
    response = post(
        "/drains",
        {"scope": "workflow", "target": "refunds", "mode": "cancel", "reason": "incident 7"},
        token,
    )
    assert response.status_code == 200, response.content
    assert response.json()["report"][0]["action"] == str(held.pk)
    assert response.json()["report"][0]["outcome"] == "cancelled"
    bad = post(
        "/drains", {"scope": "agent", "target": "refund-bot", "mode": "x", "reason": "r"}, token
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "mode"


def test_rollback__api__202_then_progress(desk: Desk, token: str) -> None:
    action = executed(desk)
    response = post(
        "/rollbacks", {"scope": "agent", "target": "refund-bot", "count": 1, "reason": "r"}, token
    )
    assert response.status_code == 202, response.content
    body = response.json()
    assert body["planned"] == [str(action.pk)]
    assert (body["state"], body["done"], body["total"]) == ("pending", 0, 1)
    from apps.killswitches.rollback import rollback_perform

    rollback_perform(run_id=body["id"])
    read = Client().get(
        f"/api/v1/rollbacks/{body['id']}", headers={"Authorization": f"Bearer {token}"}
    )
    assert read.json()["state"] == "finished"
    assert read.json()["report"][0]["outcome"] == "rolled_back"
    assert Action.objects.get(pk=action.pk).status == Status.ROLLED_BACK
    bad = post(
        "/rollbacks", {"scope": "tool", "target": "issue_refund", "count": 1, "reason": "r"}, token
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["field"] == "scope"
