"""The registry's Django admin: open to the admin role only, validating tools, revoking keys,
never showing a key's digest."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.registry.models import Agent, AgentKey, ModelPrice, Tool
from apps.registry.services import KeyRejected, agent_key_authenticate, agent_key_create
from tests.factories import make_tool

pytestmark = pytest.mark.django_db

MODELS = ["workflow", "tool", "agent", "agentkey", "modelprice"]


@pytest.fixture
def registry(agent: Agent) -> dict[str, Any]:
    """One object of each registry model, by model name."""
    issued = agent_key_create(agent=agent, actor="system:test", label="runner")
    price = ModelPrice.objects.create(
        provider="openai", model="gpt-mini", input_per_1k=Decimal("0.15"), output_per_1k=Decimal(1)
    )
    return {
        "workflow": agent.workflows.get(slug="refunds"),
        "tool": make_tool(),
        "agent": agent,
        "agentkey": issued.record,
        "modelprice": price,
    }


def admin_urls(model: str, obj: Any) -> list[str]:
    urls = [
        reverse(f"admin:registry_{model}_changelist"),
        reverse(f"admin:registry_{model}_change", args=[obj.pk]),
        reverse(f"admin:registry_{model}_history", args=[obj.pk]),
    ]
    if model != "agentkey":
        urls.append(reverse(f"admin:registry_{model}_add"))
    return urls


@pytest.mark.parametrize("model", MODELS)
def test_registry_admin__admin_role__pages_open(
    client_for: Any, registry: dict[str, Any], model: str
) -> None:
    client = client_for(Role.ADMIN)
    for url in admin_urls(model, registry[model]):
        assert client.get(url).status_code == 200, url


@pytest.mark.parametrize("model", MODELS)
def test_registry_admin__supervisor__refused_naming_the_role(
    client_for: Any, registry: dict[str, Any], model: str
) -> None:
    client = client_for(Role.SUPERVISOR)
    for url in admin_urls(model, registry[model]):
        response = client.get(url)
        assert response.status_code == 403, url
        assert "This page needs the admin role." in response.content.decode()


def test_registry_admin__index__lists_every_registry_model(client_for: Any) -> None:
    html = client_for(Role.ADMIN).get(reverse("admin:app_list", args=["registry"])).content
    for model in MODELS:
        assert reverse(f"admin:registry_{model}_changelist").encode() in html, model


# --- tools ---------------------------------------------------------------------------------


def tool_form(**overrides: Any) -> dict[str, Any]:
    """A valid add-tool form; checkboxes left out of the dict are unticked."""
    data: dict[str, Any] = {
        "slug": "send_email",
        "name": "Send email",
        "description": "",
        "risk_zone": "green",
        "input_schema": '{"type": "object", "properties": {"to": {"type": "string"}}}',
        "amount_param": "",
        "connector": "http",
        "endpoint_url": "http://127.0.0.1/sandbox/send_email",
        "callable_path": "",
        "timeout_seconds": "5",
        "max_retries": "2",
        "supports_idempotency": "on",
        "breaker_failure_threshold": "5",
        "breaker_cooldown_seconds": "60",
        "undo_endpoint_url": "",
        "undo_callable_path": "",
    }
    data.update(overrides)
    return {key: value for key, value in data.items() if value is not None}


def post_tool(client: Client, **overrides: Any) -> Any:
    return client.post(reverse("admin:registry_tool_add"), tool_form(**overrides))


def field_errors(response: Any, field: str) -> list[str]:
    assert response.status_code == 200, "the form was accepted"
    errors: list[str] = response.context["adminform"].form.errors.get(field, [])
    return errors


def test_tool_admin__valid_form__tool_created(client_for: Any) -> None:
    # The control for the refusals below: the same form, valid, is accepted
    response = post_tool(client_for(Role.ADMIN))
    assert response.status_code == 302
    tool = Tool.objects.get(slug="send_email")
    assert tool.input_schema["properties"] == {"to": {"type": "string"}}
    assert tool.supports_idempotency
    assert not tool.reversible


@pytest.mark.parametrize(
    ("schema", "cause"),
    [
        (
            '{"type": "object", "properties": {"to": {"type": "strin"}}}',
            "at $.properties.to.type, 'strin' is not a JSON Schema type (array, boolean, "
            "integer, null, number, object, string)",
        ),
        ('{"type": "object", "required": "to"}', "at $.required, 'to' is not of type 'array'"),
        (
            '{"type": "object", "properties": {"n": {"type": "integer", "minimum": "1"}}}',
            "at $.properties.n.minimum, '1' is not of type 'number'",
        ),
    ],
)
def test_tool_admin__invalid_json_schema__error_names_the_cause(
    client_for: Any, schema: str, cause: str
) -> None:
    response = post_tool(client_for(Role.ADMIN), input_schema=schema)
    assert field_errors(response, "input_schema") == [
        f"Input schema: not a valid JSON Schema (draft 2020-12): {cause}."
    ]
    assert cause in response.content.decode().replace("&#x27;", "'")
    assert not Tool.objects.filter(slug="send_email").exists()


@pytest.mark.parametrize("schema", ['["to"]', "true", '{"type": "string"}'])
def test_tool_admin__schema_not_for_an_object__refused(client_for: Any, schema: str) -> None:
    response = post_tool(client_for(Role.ADMIN), input_schema=schema)
    [error] = field_errors(response, "input_schema")
    assert error.startswith("Input schema: ")
    assert "object" in error
    assert not Tool.objects.filter(slug="send_email").exists()


def test_tool_admin__not_json__refused(client_for: Any) -> None:
    response = post_tool(client_for(Role.ADMIN), input_schema="{type: object}")
    assert field_errors(response, "input_schema") == ["Enter a valid JSON."]


@pytest.mark.parametrize(
    ("overrides", "field", "message"),
    [
        ({"endpoint_url": ""}, "endpoint_url", "An HTTP tool needs an endpoint URL."),
        (
            {"connector": "callable", "endpoint_url": ""},
            "callable_path",
            "An in-process tool needs a callable path.",
        ),
        (
            {"reversible": "on"},
            "undo_endpoint_url",
            "A reversible tool needs an undo endpoint URL or an undo callable path.",
        ),
        (
            {"amount_param": "amount_cents"},
            "amount_param",
            "Amount param 'amount_cents' is not one of the input schema's properties.",
        ),
    ],
)
def test_tool_admin__connector_or_undo_missing__error_next_to_the_field(
    client_for: Any, overrides: dict[str, str], field: str, message: str
) -> None:
    response = post_tool(client_for(Role.ADMIN), **overrides)
    assert field_errors(response, field) == [message]
    assert not Tool.objects.filter(slug="send_email").exists()


@pytest.mark.parametrize(
    "overrides",
    [
        {"connector": "callable", "endpoint_url": "", "callable_path": "apps.sandbox.send"},
        {"reversible": "on", "undo_endpoint_url": "http://127.0.0.1/sandbox/unsend"},
        {"reversible": "on", "undo_callable_path": "apps.sandbox.unsend"},
    ],
)
def test_tool_admin__connector_and_undo_given__accepted(
    client_for: Any, overrides: dict[str, str]
) -> None:
    response = post_tool(client_for(Role.ADMIN), **overrides)
    assert response.status_code == 302
    assert Tool.objects.filter(slug="send_email").exists()


# --- keys ----------------------------------------------------------------------------------


def test_agentkey_admin__add__refused(client_for: Any, agent: Agent) -> None:
    # Keys are made where they can be shown once (the command), never through a form
    client = client_for(Role.ADMIN)
    url = "/admin/registry/agentkey/add/"
    assert client.get(url).status_code == 403
    response = client.post(url, {"agent": agent.pk, "prefix": "0" * 12, "digest": "0" * 64})
    assert response.status_code == 403
    assert not AgentKey.objects.exists()


def test_agentkey_admin__change_post__refused_and_key_unchanged(
    client_for: Any, registry: dict[str, Any]
) -> None:
    key = registry["agentkey"]
    url = reverse("admin:registry_agentkey_change", args=[key.pk])
    response = client_for(Role.ADMIN).post(url, {"label": "changed", "digest": "0" * 64})
    assert response.status_code == 403
    stored = AgentKey.objects.get(pk=key.pk)
    assert (stored.label, stored.digest) == ("runner", key.digest)


def test_agentkey_admin__revoke_action__keys_revoked_and_audited(
    client_for: Any, agent: Agent
) -> None:
    # Given two keys of the agent, one to revoke and one to keep
    doomed = agent_key_create(agent=agent, actor="system:test")
    kept = agent_key_create(agent=agent, actor="system:test")
    # When the admin revokes one through the list's action
    response = client_for(Role.ADMIN).post(
        reverse("admin:registry_agentkey_changelist"),
        {"action": "revoke_keys", "_selected_action": [doomed.record.pk], "index": 0},
        follow=True,
    )
    # Then that key stops working, the other does not, and the admin is told which
    assert response.status_code == 200
    with pytest.raises(KeyRejected, match="was revoked"):
        agent_key_authenticate(doomed.key)
    assert agent_key_authenticate(kept.key).pk == kept.record.pk
    assert f"Revoked 1 key(s): {doomed.record.prefix}." in response.content.decode()
    event = AuditEvent.objects.get(verb="agent_key.revoked")
    assert (event.actor_type, event.actor) == ("user", "erin")
    assert event.target_id == str(doomed.record.pk)


def test_agentkey_admin__revoke_already_revoked__left_alone(client_for: Any, agent: Agent) -> None:
    issued = agent_key_create(agent=agent, actor="system:test")
    client = client_for(Role.ADMIN)
    payload = {"action": "revoke_keys", "_selected_action": [issued.record.pk], "index": 0}
    url = reverse("admin:registry_agentkey_changelist")
    client.post(url, payload)
    first = AgentKey.objects.get(pk=issued.record.pk).revoked_at
    response = client.post(url, payload, follow=True)
    assert AgentKey.objects.get(pk=issued.record.pk).revoked_at == first
    assert AuditEvent.objects.filter(verb="agent_key.revoked").count() == 1
    html = response.content.decode()
    assert f"Already revoked, left as they were: {issued.record.prefix}." in html


def test_agentkey_admin__delete__refused(client_for: Any, registry: dict[str, Any]) -> None:
    key = registry["agentkey"]
    client = client_for(Role.ADMIN)
    url = reverse("admin:registry_agentkey_delete", args=[key.pk])
    assert client.post(url, {"post": "yes"}).status_code == 403
    assert AgentKey.objects.filter(pk=key.pk).exists()


def test_registry_admin__every_page__never_shows_a_digest(
    client_for: Any, registry: dict[str, Any]
) -> None:
    # Given keys in every state, so that each column has something to show
    agent = registry["agent"]
    keys = [registry["agentkey"].pk]
    keys.append(agent_key_create(agent=agent, actor="system:test", expires_in_days=1).record.pk)
    client = client_for(Role.ADMIN)
    client.post(
        reverse("admin:registry_agentkey_changelist"),
        {"action": "revoke_keys", "_selected_action": keys[-1:], "index": 0},
    )
    digests = list(AgentKey.objects.values_list("digest", flat=True))
    assert len(digests) == 2
    # When every registry admin page is opened
    urls = [url for model in MODELS for url in admin_urls(model, registry[model])]
    urls += [reverse("admin:index"), reverse("admin:app_list", args=["registry"])]
    for url in urls:
        html = client.get(url).content.decode()
        # Then no digest appears, whole or in part (the first 16 characters say enough)
        for digest in digests:
            assert digest[:16] not in html, url
    # And the key pages do show the prefix, so the test is looking at real key rows
    html = client.get(reverse("admin:registry_agent_change", args=[agent.pk])).content.decode()
    for prefix in AgentKey.objects.values_list("prefix", flat=True):
        assert prefix in html


def test_agentkey_admin__search_by_digest__finds_nothing(
    client_for: Any, registry: dict[str, Any]
) -> None:
    # A search that matched digests would let one test guesses against them
    client = client_for(Role.ADMIN)
    url = reverse("admin:registry_agentkey_changelist")
    key = registry["agentkey"]
    assert client.get(url, {"q": key.prefix}).context["cl"].result_count == 1
    assert client.get(url, {"q": key.digest}).context["cl"].result_count == 0
    assert client.get(url, {"q": key.digest[:8]}).context["cl"].result_count == 0
