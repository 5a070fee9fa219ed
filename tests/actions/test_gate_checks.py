"""The gate's checks before any decision, through POST /api/v1/actions: the key (401), the
agent and its scope (403), the input (422, and 400 for a body that is not JSON). A refused
proposal leaves no trace: no action and no audit event."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.registry.models import Agent, AgentKey, Workflow
from apps.registry.services import IssuedKey, agent_key_create, agent_key_revoke
from tests.actions.conftest import proposal_body, propose, recorded, refund_params
from tests.factories import make_tool

pytestmark = pytest.mark.django_db


class Baseline:
    """The counts of actions and audit events a refusal must leave as they are."""

    def __init__(self) -> None:
        self.counts = recorded()

    def reset(self) -> None:
        """After a test's own set-up wrote audit events (a revoked key, a new key)."""
        self.counts = recorded()


@pytest.fixture(autouse=True)
def baseline(book: BookVersion, key: IssuedKey) -> Iterator[Baseline]:
    """Every test here is a refusal: measured after the fixtures (agent, key, book) have written
    theirs, and checked once the test is done."""
    measured = Baseline()
    yield measured
    assert recorded() == measured.counts, "a refused proposal recorded something"


def assert_error(body: dict[str, Any], detail: str, errors: list[dict[str, str]]) -> None:
    assert body == {"detail": detail, "errors": errors}


# --- 401: the key -----------------------------------------------------------------------------


def test_propose__without_authorization_header__401(client: Client) -> None:
    response = propose(client, None, proposal_body())
    assert response.status_code == 401
    assert_error(response.json(), "Authentication required: sign in or send a valid key.", [])


def test_propose__malformed_key__401_says_malformed(client: Client) -> None:
    response = propose(client, "not-a-key", proposal_body())
    assert response.status_code == 401
    assert_error(
        response.json(),
        "Invalid agent key: malformed key: expected esk_<prefix>_<secret>.",
        [],
    )


def test_propose__unknown_key__401_says_unknown(client: Client) -> None:
    response = propose(client, "esk_000000000000_" + "x" * 43, proposal_body())
    assert response.status_code == 401
    assert_error(response.json(), "Invalid agent key: unknown key.", [])


def test_propose__right_prefix_wrong_secret__401_says_unknown(
    client: Client, key: IssuedKey
) -> None:
    # Given the prefix of a real key with another secret
    forged = f"esk_{key.record.prefix}_" + "y" * 43
    # When it is used
    response = propose(client, forged, proposal_body())
    # Then it is as unknown as a made-up key (nothing tells a guesser the prefix exists)
    assert response.status_code == 401
    assert_error(response.json(), "Invalid agent key: unknown key.", [])


def test_propose__expired_key__401_says_expired_and_when(client: Client, key: IssuedKey) -> None:
    # Given a key that expired a minute ago
    expired_at = timezone.now() - timedelta(minutes=1)
    AgentKey.objects.filter(pk=key.record.pk).update(expires_at=expired_at)
    # When it is used
    response = propose(client, key.key, proposal_body())
    # Then the answer names the key and the time it expired
    assert response.status_code == 401
    assert_error(
        response.json(),
        f"Invalid agent key: key {key.record.prefix} expired at {expired_at:%Y-%m-%d %H:%M} UTC.",
        [],
    )


def test_propose__revoked_key__401_says_revoked(
    client: Client, key: IssuedKey, baseline: Baseline
) -> None:
    # Given a revoked key (revoking is audited: measure from here)
    agent_key_revoke(key_id=key.record.pk, actor="system:test")
    baseline.reset()
    # When it is used
    response = propose(client, key.key, proposal_body())
    # Then the answer names the key and why
    assert response.status_code == 401
    assert_error(response.json(), f"Invalid agent key: key {key.record.prefix} was revoked.", [])


def test_propose__session_instead_of_key__401(client_for: Any) -> None:
    # Staff sessions cannot propose: only an agent key reaches this endpoint.
    response = propose(client_for(Role.ADMIN), None, proposal_body())
    assert response.status_code == 401


# --- 403: the agent and its scope -------------------------------------------------------------


@pytest.mark.parametrize("status", [Agent.Status.PAUSED, Agent.Status.QUARANTINED])
def test_propose__agent_not_active__403_names_status(
    client: Client, key: IssuedKey, agent: Agent, status: str
) -> None:
    # Given refund-bot is paused or quarantined
    Agent.objects.filter(pk=agent.pk).update(status=status)
    # When it proposes with a valid key
    response = propose(client, key.key, proposal_body())
    # Then it is refused, saying why
    assert response.status_code == 403
    assert_error(response.json(), f"Agent refund-bot is {status} and may not act.", [])


def test_propose__workflow_outside_key_scope__403_names_workflow(
    client: Client, agent: Agent, payments: Workflow, baseline: Baseline
) -> None:
    # Given a key of refund-bot scoped to payments only (the agent serves refunds too)
    scoped = agent_key_create(agent=agent, actor="system:test", workflows=[payments])
    baseline.reset()
    # When it proposes in refunds
    response = propose(client, scoped.key, proposal_body(workflow="refunds"))
    # Then the workflow is named, with the workflows the key may act in
    assert response.status_code == 403
    assert_error(
        response.json(),
        "This key may not act in workflow 'refunds'.",
        [{"field": "workflow", "message": "not among the key's workflows: payments"}],
    )


def test_propose__workflow_agent_does_not_serve__403_names_workflow(
    client: Client, key: IssuedKey
) -> None:
    response = propose(client, key.key, proposal_body(workflow="invoices"))
    assert response.status_code == 403
    assert response.json()["errors"] == [
        {"field": "workflow", "message": "not among the key's workflows: payments, refunds"}
    ]


def test_propose__tool_not_among_agents_tools__403_names_tool(
    client: Client, key: IssuedKey
) -> None:
    # Given a registered tool refund-bot was not given
    make_tool("close_account", risk_zone="red")
    # When refund-bot proposes it
    response = propose(
        client, key.key, proposal_body(tool="close_account", params={"account_id": "A-1"})
    )
    # Then the tool is named
    assert response.status_code == 403
    assert_error(
        response.json(),
        "Agent refund-bot may not use tool 'close_account'.",
        [{"field": "tool", "message": "not among the agent's tools"}],
    )


# --- 422: the input ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "field", "message"),
    [
        pytest.param(
            refund_params(amount_cents="3000"),
            "params.amount_cents",
            "'3000' is not of type 'integer'",
            id="wrong-type",
        ),
        pytest.param(
            {name: value for name, value in refund_params().items() if name != "reason"},
            "params.reason",
            "'reason' is a required property",
            id="missing-required",
        ),
        pytest.param(
            refund_params(coupon="FREE"),
            "params.coupon",
            "Additional properties are not allowed ('coupon' was unexpected)",
            id="additional-property",
        ),
        pytest.param(
            refund_params(currency="eur"),
            "params.currency",
            "'eur' does not match '^[A-Z]{3}$'",
            id="pattern",
        ),
        pytest.param(
            refund_params(amount_cents=0),
            "params.amount_cents",
            "0 is less than the minimum of 1",
            id="minimum",
        ),
    ],
)
def test_propose__params_against_tool_schema__422_names_param(
    client: Client, key: IssuedKey, params: dict[str, Any], field: str, message: str
) -> None:
    response = propose(client, key.key, proposal_body(params=params))
    assert response.status_code == 422
    assert_error(
        response.json(),
        f"Invalid params: {field}: {message}",
        [{"field": field, "message": message}],
    )


@pytest.mark.parametrize("confidence", [1.01, -0.1, 7])
def test_propose__confidence_out_of_range__422_names_confidence(
    client: Client, key: IssuedKey, confidence: float
) -> None:
    response = propose(client, key.key, proposal_body(confidence=confidence))
    assert response.status_code == 422
    body = response.json()
    assert body["detail"] == "Invalid input: confidence."
    assert [error["field"] for error in body["errors"]] == ["confidence"]
    bound = "greater than or equal to 0" if confidence < 0 else "less than or equal to 1"
    assert bound in body["errors"][0]["message"]


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"params": "order 1042"}, "params"),
        ({"workflow": ""}, "workflow"),
        ({"idempotency_key": ""}, "idempotency_key"),
        (
            {"usage": {"model": "small", "input_tokens": -1, "output_tokens": 3}},
            "usage.input_tokens",
        ),
    ],
)
def test_propose__invalid_envelope_field__422_names_it(
    client: Client, key: IssuedKey, changes: dict[str, Any], field: str
) -> None:
    response = propose(client, key.key, proposal_body(**changes))
    assert response.status_code == 422
    assert [error["field"] for error in response.json()["errors"]] == [field]


def test_propose__missing_required_fields__422_names_each(client: Client, key: IssuedKey) -> None:
    response = propose(client, key.key, {"subject": "order:1042"})
    assert response.status_code == 422
    fields = {error["field"] for error in response.json()["errors"]}
    assert fields == {"workflow", "tool", "params"}


def test_propose__body_not_json__400_names_body(client: Client, key: IssuedKey) -> None:
    # The API answers any unparseable body with 400 (see tests/core/test_api_errors.py): the
    # request is malformed, not a well-formed request with invalid values.
    response = propose(client, key.key, '{"workflow": "refunds",')
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "The request body is not valid JSON."
    assert [error["field"] for error in body["errors"]] == ["body"]
    assert "line 1 column" in body["errors"][0]["message"]


def test_propose__refusals__nothing_recorded_in_any_table(client: Client, key: IssuedKey) -> None:
    # Given one of each kind of refusal in a row
    bad = [
        (None, proposal_body()),
        ("esk_bad", proposal_body()),
        (key.key, proposal_body(tool="nope")),
        (key.key, proposal_body(params=refund_params(currency="eur"))),
        (key.key, proposal_body(confidence=2)),
    ]
    # When they are all sent
    statuses = [propose(client, secret, body).status_code for secret, body in bad]
    # Then each was refused and neither actions nor audit events exist beyond the fixtures'
    assert statuses == [401, 401, 403, 422, 422]
    assert not Action.objects.exists()
    assert not AuditEvent.objects.filter(verb__startswith="action.").exists()
