"""The demo sandbox is a system of record like any other: it exists only where SANDBOX_ENABLED
says so, and it answers only the holders of its credential (SANDBOX_TOKEN), which the tools'
HTTP connector sends from the tool (`Tool.credential_secret`) and never shows."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from apps.actions import connectors
from apps.actions.connectors import ConnectorFailure, call_tool
from apps.demo.agents import demo_tools_credential_ensure
from apps.demo.sandbox import sandbox_seed
from apps.registry.models import Tool
from apps.sandbox.config import sandbox_token
from apps.sandbox.models import IdempotencyRecord, Refund, SandboxFaults
from apps.sandbox.services import faults_set
from controlplane.environment import ConfigurationError
from tests.conftest import ROOT
from tests.factories import make_tool
from tests.sandbox.conftest import SANDBOX_TOKEN, order, post, sandbox_open

pytestmark = pytest.mark.django_db

REFUND: dict[str, Any] = {
    "order_id": "1009",
    "amount_cents": 5000,
    "currency": "EUR",
    "reason": "parcel arrived damaged",
}
# Every endpoint of the sandbox, with params it would accept.
ENDPOINTS: list[tuple[str, dict[str, Any]]] = [
    ("refunds", REFUND),
    ("refunds/undo", {"idempotency_key_of_original": "k-none"}),
    ("orders/lookup", {"order_id": "1009"}),
    ("noop", {}),
    ("invoices/match", {"invoice_id": "INV-2001", "po_number": "PO-7001",
                        "amount_cents": 128_000, "currency": "EUR"}),
    ("invoices/unmatch", {"invoice_id": "INV-2001"}),
    ("invoices/flag", {"invoice_id": "INV-2001", "note": "price differs"}),
    ("invoices/unflag", {"invoice_id": "INV-2001"}),
    ("access/grant", {"employee_id": "E-103", "system": "github", "role": "editor",
                      "duration_days": 14}),
    ("access/revoke", {"grant_id": "gr_none"}),
    ("access/reset-mfa", {"employee_id": "E-103"}),
    ("no/such/endpoint", {}),
]  # fmt: skip


@pytest.fixture
def open_sandbox(settings: Any) -> str:
    """The sandbox switched on and seeded; its credential."""
    sandbox_seed()
    return sandbox_open(settings)


def nothing_written() -> bool:
    return not Refund.objects.exists() and not IdempotencyRecord.objects.exists()


# Switched off


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_sandbox__disabled__404_even_with_the_credential(
    client: Client, settings: Any, path: str, params: dict[str, Any]
) -> None:
    # Given a deployment without the sandbox (its orders exist: someone seeded them)
    sandbox_seed()
    settings.SANDBOX_ENABLED = False
    settings.SANDBOX_TOKEN = SANDBOX_TOKEN
    # When a caller holding the right credential calls one of its endpoints
    response = post(client, path, params, key="k-1")
    # Then there is no such address, and nothing changed
    assert response.status_code == 404
    assert "application/json" not in response["Content-Type"]
    assert nothing_written()


def test_faults_switch__disabled__404_for_operators_too(client_for: Any, settings: Any) -> None:
    # Given a deployment without the sandbox
    settings.SANDBOX_ENABLED = False
    client = client_for(Role.ONCALL)
    # When on-call reads or sets the sandbox's faults switch
    read = client.get("/sandbox/faults")
    written = post(client, "faults", {"mode": "failing"}, key=None)
    # Then neither exists, and the switch is untouched
    assert (read.status_code, written.status_code) == (404, 404)
    assert not SandboxFaults.objects.exists()


def test_settings__nothing_set__sandbox_off(tmp_path: Any) -> None:
    # Given an environment that says nothing of the sandbox
    env = {
        name: value
        for name, value in os.environ.items()
        if name not in ("SANDBOX_ENABLED", "SANDBOX_TOKEN")
    }
    # When the settings are read
    result = subprocess.run(
        [sys.executable, "-c",
         "from django.conf import settings; print(settings.SANDBOX_ENABLED)"],
        cwd=ROOT, env={**env, "DJANGO_SETTINGS_MODULE": "controlplane.settings",
                       "ESCAPEMENT_VAR_DIR": str(tmp_path)},
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    # Then the sandbox is off
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


# Switched on: the credential


@pytest.mark.parametrize(("path", "params"), ENDPOINTS)
def test_sandbox__no_credential__401_naming_the_header_nothing_written(
    client: Client, open_sandbox: str, path: str, params: dict[str, Any]
) -> None:
    # When an anonymous caller calls an endpoint, with everything else right
    response = post(client, path, params, key="k-1", credential=None)
    # Then it is refused as unauthenticated, naming the header to send, and nothing changed
    assert response.status_code == 401
    assert response["WWW-Authenticate"] == 'Bearer realm="sandbox"'
    body = response.json()
    assert body["ok"] is False
    assert body["field"] == "Authorization"
    assert "Bearer" in body["error"]
    assert nothing_written()
    assert order("1009").refunded_cents == 0


@pytest.mark.parametrize(
    "authorization",
    [
        "Bearer not-the-sandbox-credential",
        f"Bearer {SANDBOX_TOKEN[:-1]}",
        f"Bearer {SANDBOX_TOKEN}x",
        f"Bearer {SANDBOX_TOKEN.upper()}",
        f"Basic {SANDBOX_TOKEN}",
        SANDBOX_TOKEN,
        "Bearer ",
    ],
)
def test_refund__wrong_credential__401_and_no_refund(
    client: Client, open_sandbox: str, authorization: str
) -> None:
    # When a refund is asked for with something that is not the credential
    response = client.post(
        "/sandbox/refunds", REFUND, content_type="application/json",
        headers={"Authorization": authorization, "Idempotency-Key": "k-1"},
    )  # fmt: skip
    # Then it is refused, and no money moves
    assert response.status_code == 401
    assert response.json()["field"] == "Authorization"
    assert nothing_written()


def test_refund__no_token_configured__even_an_empty_bearer_refused(
    client: Client, open_sandbox: str, settings: Any
) -> None:
    # Given a sandbox whose token is empty (a misconfiguration: it must fail closed)
    settings.SANDBOX_TOKEN = ""
    # When a caller sends an empty credential
    response = post(client, "refunds", REFUND, credential="")
    # Then it is refused all the same
    assert response.status_code == 401
    assert nothing_written()


def test_refund__right_credential__201(client: Client, open_sandbox: str) -> None:
    response = post(client, "refunds", REFUND, key="k-1", credential=open_sandbox)
    assert response.status_code == 201
    assert order("1009").refunded_cents == 5000


def test_refund__no_credential_while_failing__401_not_503(
    client: Client, open_sandbox: str
) -> None:
    # Given a sandbox told to fail (or to be slow: each answer would wait)
    faults_set(mode="failing")
    # When an anonymous caller calls it
    response = post(client, "refunds", REFUND, credential=None)
    # Then the credential is checked before anything else: a 401, not the faults' 503
    assert response.status_code == 401
    assert nothing_written()


# The connector carries the tool's credential


@pytest.fixture
def live_tool(live_server: Any, open_sandbox: str) -> Iterator[Tool]:
    """issue_refund pointed at the live server's sandbox, without a credential yet."""
    tool = make_tool()
    tool.endpoint_url = f"{live_server.url}/sandbox/refunds"
    tool.save()
    yield tool
    connectors._pool.clear()  # keep-alive connections hold live-server threads


@pytest.mark.django_db(transaction=True)
def test_connector__tool_with_the_credential__refund_issued(live_tool: Tool) -> None:
    # Given a tool holding the sandbox's credential
    live_tool.credential_secret = SANDBOX_TOKEN
    live_tool.save()
    # When the connector calls it
    result = call_tool(live_tool, params=REFUND, idempotency_key="k-conn", action_id="act-1")
    # Then the sandbox took it
    assert result["order"]["refunded_cents"] == 5000
    assert Refund.objects.get().idempotency_key == "k-conn"


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("credential", ["", "a-credential-of-another-system"])
def test_connector__tool_without_the_right_credential__permanent_refusal(
    live_tool: Tool, credential: str
) -> None:
    # Given a tool with no credential, or another one
    live_tool.credential_secret = credential
    live_tool.save()
    # When the connector calls it
    with pytest.raises(ConnectorFailure) as failure:
        call_tool(live_tool, params=REFUND, idempotency_key="k-conn", action_id="act-1")
    # Then the refusal is permanent (never retried), says why, and shows no credential
    assert failure.value.status == 401
    assert failure.value.transient is False
    assert "(field Authorization)" in failure.value.message
    assert SANDBOX_TOKEN not in failure.value.message
    assert not credential or credential not in failure.value.message
    assert nothing_written()


def test_connector_call__repr__never_shows_the_credential() -> None:
    call = connectors.Call(
        "http://127.0.0.1/sandbox/refunds", "", {}, "k", "a", 1.0, "s3cret-credential-value"
    )
    assert "s3cret-credential-value" not in repr(call)


# Where the token comes from


def test_token__set__used() -> None:
    token = "a-token-of-twenty-chars"
    assert sandbox_token({"SANDBOX_TOKEN": f" {token} "}, secret_key="k" * 50) == token


def test_token__too_short__configuration_error_naming_it() -> None:
    with pytest.raises(ConfigurationError, match=r"^SANDBOX_TOKEN: at least 16 characters"):
        sandbox_token({"SANDBOX_TOKEN": "short"}, secret_key="k" * 50)


def test_token__unset__derived_from_the_key_and_revealing_nothing_of_it() -> None:
    key, other = "k" * 50, "o" * 50
    derived = sandbox_token({}, secret_key=key)
    assert derived == sandbox_token({"SANDBOX_TOKEN": "  "}, secret_key=key)
    assert derived != sandbox_token({}, secret_key=other)
    assert len(derived) >= 32
    assert key[:16] not in derived


# The demo tools get the credential; no other tool does


def test_demo_credential__local_sandbox_tools_get_it_others_never(open_sandbox: str) -> None:
    # Given a tool calling the sandbox on this machine, one calling another system, and one
    # pointed elsewhere since it was given the sandbox's credential
    local = make_tool("issue_refund")
    Tool.objects.filter(pk=local.pk).update(
        endpoint_url="http://127.0.0.1:8000/sandbox/refunds",
        undo_endpoint_url="http://127.0.0.1:8000/sandbox/refunds/undo",
    )
    foreign = make_tool("send_payment")
    Tool.objects.filter(pk=foreign.pk).update(
        endpoint_url="https://payments.example/pay",
        undo_endpoint_url="http://127.0.0.1:8000/sandbox/noop",
    )
    moved = make_tool("lookup_order")
    Tool.objects.filter(pk=moved.pk).update(
        endpoint_url="https://orders.example/lookup", credential_secret=open_sandbox
    )
    # When the demo is seeded, twice
    first = demo_tools_credential_ensure()
    second = demo_tools_credential_ensure()
    # Then only the local tool holds the credential, and the second run changes nothing
    credentials = dict(Tool.objects.values_list("slug", "credential_secret"))
    assert credentials == {"issue_refund": open_sandbox, "send_payment": "", "lookup_order": ""}
    assert first == [
        "tool issue_refund given the sandbox's credential",
        "tool lookup_order no longer calls the sandbox: credential removed",
    ]
    assert second == []
