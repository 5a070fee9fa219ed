"""GET /api/v1/actions/{id} (the proposing agent, or staff) and POST .../rollback (on-call and
admin only), and what the OpenAPI document says about the action endpoints."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import Action, Decision, Status
from apps.actions.states import transition
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool, Workflow
from apps.registry.services import IssuedKey, agent_key_create
from tests.actions import tools
from tests.actions.conftest import proposal_body, propose, verbs_of
from tests.factories import REFUND_SCHEMA, make_agent

pytestmark = pytest.mark.django_db

ACTION_FIELDS = {
    "id", "status", "decision", "reasons", "book_version", "workflow", "tool", "subject",
    "spot_check", "result", "error", "created_at", "queued_at", "started_at", "finished_at",
    "rolled_back_at",
}  # fmt: skip
STAFF = [Role.SUPERVISOR, Role.RISK, Role.ONCALL, Role.ADMIN]
RESULT = {"refund_id": "R-77", "amount_cents": 3000}

MakeSucceeded = Callable[..., Action]


def url(action_id: object, *, rollback: bool = False) -> str:
    return f"/api/v1/actions/{action_id}" + ("/rollback" if rollback else "")


def bearer(key: IssuedKey) -> dict[str, str]:
    return {"Authorization": f"Bearer {key.key}"}


def callable_tool(slug: str, *, reversible: bool = True, undo: str = "undo_refund") -> Tool:
    """A refund tool run in-process by tests.actions.tools."""
    return Tool.objects.create(
        slug=slug,
        name=slug,
        input_schema=REFUND_SCHEMA,
        amount_param="amount_cents",
        connector=Tool.Connector.CALLABLE,
        callable_path="tests.actions.tools.refund",
        undo_callable_path=f"tests.actions.tools.{undo}" if reversible else "",
        reversible=reversible,
    )


@pytest.fixture
def proposed(client: Client, key: IssuedKey, book: BookVersion) -> dict[str, Any]:
    """An allowed refund of refund-bot, as the API answered it."""
    response = propose(client, key.key, proposal_body())
    assert response.status_code == 201
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def make_succeeded(agent: Agent, refunds: Workflow, tool_calls: None) -> MakeSucceeded:
    """make_succeeded(tool) -> an action of that tool driven through the machine to succeeded,
    with RESULT as what the system of record answered."""

    def make(tool: Tool) -> Action:
        action = Action.objects.create(
            agent=agent,
            workflow=refunds,
            tool=tool,
            decision=Decision.ALLOW,
            params={"order_id": "1042", "amount_cents": 3000, "currency": "EUR", "reason": "x"},
            subject="order:1042",
        )
        steps: list[tuple[str, dict[str, Any]]] = [
            (Status.APPROVED, {}),
            (Status.QUEUED, {"queued_at": timezone.now()}),
            (Status.RUNNING, {"started_at": timezone.now()}),
            (Status.SUCCEEDED, {"result": RESULT, "finished_at": timezone.now()}),
        ]
        for status, fields in steps:
            transition(action, status, actor="system:test", **fields)
        return action

    return make


# --- reading ----------------------------------------------------------------------------------


def test_read__by_proposing_agent__200_with_documented_fields(
    client: Client, key: IssuedKey, proposed: dict[str, Any]
) -> None:
    # When refund-bot reads its own action with its key
    response = client.get(url(proposed["id"]), headers=bearer(key))
    # Then it sees exactly the documented fields, as the proposal answered them
    assert response.status_code == 200
    body = response.json()
    assert set(body) == ACTION_FIELDS
    assert body == proposed
    assert body["status"] == Status.QUEUED
    assert (body["workflow"], body["tool"], body["book_version"]) == ("refunds", "issue_refund", 1)
    assert body["result"] is None
    assert body["error"] == ""


def test_read__after_execution__reports_result_and_times(
    client: Client, key: IssuedKey, make_succeeded: MakeSucceeded
) -> None:
    action = make_succeeded(callable_tool("refund_inproc"))
    body = client.get(url(action.pk), headers=bearer(key)).json()
    assert body["status"] == Status.SUCCEEDED
    assert body["result"] == RESULT
    assert body["book_version"] is None
    assert None not in (body["queued_at"], body["started_at"], body["finished_at"])


def test_read__by_another_agents_key__404_as_if_missing(
    client: Client, user_for: Any, refunds: Workflow, proposed: dict[str, Any]
) -> None:
    # Given a key of another agent
    other = make_agent("other-bot", owner=user_for(Role.ADMIN), workflows=[refunds])
    other_key = agent_key_create(agent=other, actor="system:test")
    # When it reads refund-bot's action
    response = client.get(url(proposed["id"]), headers=bearer(other_key))
    # Then the action is as invisible as one that does not exist
    assert response.status_code == 404
    assert response.json() == {"detail": f"No action {proposed['id']}.", "errors": []}


@pytest.mark.parametrize("role", STAFF)
def test_read__by_staff_session__200(client_for: Any, proposed: dict[str, Any], role: Role) -> None:
    response = client_for(role).get(url(proposed["id"]))
    assert response.status_code == 200
    assert response.json() == proposed


def test_read__by_finance__403_naming_roles(client_for: Any, proposed: dict[str, Any]) -> None:
    response = client_for(Role.FINANCE).get(url(proposed["id"]))
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Reading actions needs the supervisor, risk, oncall or admin role.",
        "errors": [],
    }


def test_read__anonymous__401(client: Client, proposed: dict[str, Any]) -> None:
    response = client.get(url(proposed["id"]))
    assert response.status_code == 401
    assert set(response.json()) == {"detail", "errors"}


def test_read__bad_key__401_naming_reason(client: Client, proposed: dict[str, Any]) -> None:
    response = client.get(url(proposed["id"]), headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401
    assert "malformed key" in response.json()["detail"]


@pytest.mark.parametrize("as_agent", [True, False], ids=["agent", "staff"])
def test_read__unknown_id__404_in_error_format(
    client: Client, client_for: Any, key: IssuedKey, as_agent: bool
) -> None:
    missing = uuid.uuid4()
    if as_agent:
        response = client.get(url(missing), headers=bearer(key))
    else:
        response = client_for(Role.SUPERVISOR).get(url(missing))
    assert response.status_code == 404
    assert response.json() == {"detail": f"No action {missing}.", "errors": []}


# --- rolling back -----------------------------------------------------------------------------


@pytest.mark.parametrize("role", [Role.ONCALL, Role.ADMIN])
def test_rollback__succeeded_reversible__200_rolled_back_undo_called_once(
    client_for: Any, make_succeeded: MakeSucceeded, role: Role
) -> None:
    # Given a succeeded refund of an in-process tool that declares its undo
    action = make_succeeded(callable_tool("refund_inproc"))
    # When on-call (or an admin) rolls it back
    response = client_for(role).post(url(action.pk, rollback=True))
    # Then the answer is the rolled-back action
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == Status.ROLLED_BACK
    assert body["rolled_back_at"] is not None
    # And the undo ran once, told which original to undo, under a key of its own
    assert [
        tools.Call(
            {"idempotency_key_of_original": action.downstream_key, **RESULT},
            f"{action.downstream_key}-undo",
        )
    ] == tools.UNDOS
    stored = Action.objects.get(pk=action.pk)
    assert stored.undo_result == {"reversed": "R-77"}
    # And the person who did it is on the audit trail
    event = AuditEvent.objects.get(verb="action.rolled_back", target_id=str(action.pk))
    assert (event.actor_type, event.actor) == ("user", "dana" if role == Role.ONCALL else "erin")
    assert event.payload["from"] == Status.SUCCEEDED
    assert audit_verify().intact


def test_rollback__twice__second_409_undo_not_repeated(
    client_for: Any, make_succeeded: MakeSucceeded
) -> None:
    action = make_succeeded(callable_tool("refund_inproc"))
    oncall = client_for(Role.ONCALL)
    assert oncall.post(url(action.pk, rollback=True)).status_code == 200
    again = oncall.post(url(action.pk, rollback=True))
    assert again.status_code == 409
    assert again.json() == {
        "detail": "Action is rolled_back; only a succeeded action can be rolled back.",
        "errors": [],
    }
    assert len(tools.UNDOS) == 1


def test_rollback__undo_refused__200_rollback_failed_with_error(
    client_for: Any, make_succeeded: MakeSucceeded
) -> None:
    # Given a succeeded action whose system of record refuses the undo
    action = make_succeeded(callable_tool("refund_stuck", undo="undo_refused"))
    # When on-call rolls it back
    response = client_for(Role.ONCALL).post(url(action.pk, rollback=True))
    # Then the action says the rollback failed and why
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == Status.ROLLBACK_FAILED
    assert body["error"] == "refused with 409: refund already paid out"
    assert body["rolled_back_at"] is None
    assert verbs_of(action.pk)[-1] == "action.rollback_failed"


def test_rollback__irreversible_tool__409_naming_irreversible(
    client_for: Any, make_succeeded: MakeSucceeded
) -> None:
    # Given a succeeded action of a tool with no undo
    action = make_succeeded(callable_tool("wire_transfer", reversible=False))
    oncall = client_for(Role.ONCALL)
    events = AuditEvent.objects.count()
    # When on-call rolls it back
    response = oncall.post(url(action.pk, rollback=True))
    # Then it is refused, saying the tool is irreversible and what to do instead
    assert response.status_code == 409
    assert response.json() == {
        "detail": "wire_transfer is irreversible: undo it by hand in the system of record",
        "errors": [],
    }
    # And nothing was called or changed
    assert tools.UNDOS == []
    assert Action.objects.get(pk=action.pk).status == Status.SUCCEEDED
    assert AuditEvent.objects.count() == events


def test_rollback__action_not_succeeded__409_naming_status(
    client_for: Any, proposed: dict[str, Any], tool_calls: None
) -> None:
    response = client_for(Role.ONCALL).post(url(proposed["id"], rollback=True))
    assert response.status_code == 409
    assert response.json() == {
        "detail": "Action is queued; only a succeeded action can be rolled back.",
        "errors": [],
    }
    assert Action.objects.get(pk=proposed["id"]).status == Status.QUEUED
    assert tools.UNDOS == []


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.RISK, Role.FINANCE])
def test_rollback__without_oncall_or_admin__403(
    client_for: Any, make_succeeded: MakeSucceeded, role: Role
) -> None:
    action = make_succeeded(callable_tool("refund_inproc"))
    response = client_for(role).post(url(action.pk, rollback=True))
    assert response.status_code == 403
    assert response.json() == {
        "detail": "Rolling back needs the oncall or admin role.",
        "errors": [],
    }
    assert Action.objects.get(pk=action.pk).status == Status.SUCCEEDED
    assert tools.UNDOS == []


def test_rollback__with_agent_key__401_staff_only(
    client: Client, key: IssuedKey, make_succeeded: MakeSucceeded
) -> None:
    # Even the agent that proposed the action cannot undo it: rollback is for people.
    action = make_succeeded(callable_tool("refund_inproc"))
    response = client.post(url(action.pk, rollback=True), headers=bearer(key))
    assert response.status_code == 401
    assert set(response.json()) == {"detail", "errors"}
    assert tools.UNDOS == []


def test_rollback__session_without_csrf_token__403(
    client_for: Any, make_succeeded: MakeSucceeded
) -> None:
    action = make_succeeded(callable_tool("refund_inproc"))
    response = client_for(Role.ONCALL, enforce_csrf_checks=True).post(url(action.pk, rollback=True))
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "X-CSRFToken"
    assert tools.UNDOS == []


def test_rollback__unknown_id__404(client_for: Any) -> None:
    missing = uuid.uuid4()
    response = client_for(Role.ONCALL).post(url(missing, rollback=True))
    assert response.status_code == 404
    assert response.json() == {"detail": f"No action {missing}.", "errors": []}


# --- the OpenAPI document ---------------------------------------------------------------------


def resolve(schema: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        node = schema["components"]["schemas"][name]
    return node


def test_openapi__propose__documents_body_fields_and_errors(client: Client) -> None:
    schema = client.get("/api/v1/openapi.json").json()
    propose_op = schema["paths"]["/api/v1/actions"]["post"]
    body = resolve(schema, propose_op["requestBody"]["content"]["application/json"]["schema"])
    assert {
        "workflow", "tool", "params", "subject", "confidence", "reasoning", "evidence",
        "idempotency_key", "usage", "trace_id",
    } <= set(body["properties"])  # fmt: skip
    assert set(body["required"]) == {"workflow", "tool", "params"}
    assert {"200", "201", "401", "403", "409", "422"} <= set(propose_op["responses"])
    error = resolve(schema, propose_op["responses"]["422"]["content"]["application/json"]["schema"])
    assert set(error["properties"]) == {"detail", "errors"}
    # The agent key is the documented way in
    assert propose_op["security"] == [{"AgentKeyAuth": []}]


def test_openapi__read_and_rollback__documented(client: Client) -> None:
    paths = client.get("/api/v1/openapi.json").json()["paths"]
    read_op = paths["/api/v1/actions/{action_id}"]["get"]
    rollback_op = paths["/api/v1/actions/{action_id}/rollback"]["post"]
    assert {"200", "401", "403", "404"} <= set(read_op["responses"])
    assert {"200", "401", "403", "404", "409"} <= set(rollback_op["responses"])


def test_openapi__every_action_field__described(client: Client) -> None:
    schemas = client.get("/api/v1/openapi.json").json()["components"]["schemas"]
    for name in ("ProposalIn", "Usage", "ActionOut", "ReasonOut", "ErrorOut", "ErrorItem"):
        properties = schemas[name]["properties"]
        undocumented = [field for field, spec in properties.items() if not spec.get("description")]
        assert undocumented == [], f"{name}: {undocumented}"
