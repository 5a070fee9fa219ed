"""The faults switch: what each mode does to callers, who may set it (POST /sandbox/faults) and
the `sandbox_faults` command."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client

from apps.accounts.roles import Role
from apps.sandbox.models import IdempotencyRecord, Refund, SandboxFaults
from apps.sandbox.services import faults_set
from tests.sandbox.conftest import order, post

pytestmark = pytest.mark.usefixtures("seeded")

ROOT = Path(__file__).resolve().parents[2]

REFUND: dict[str, Any] = {
    "order_id": "1009",
    "amount_cents": 5000,
    "currency": "EUR",
    "reason": "parcel arrived damaged",
}


def lookup(client: Client) -> int:
    status: int = post(client, "orders/lookup", {"order_id": "1009"}).status_code
    return status


def test_failing__refund__503_and_nothing_written(client: Client) -> None:
    # Given a failing sandbox
    faults_set(mode="failing")
    # When a refund is asked for
    response = post(client, "refunds", REFUND, key="k-1")
    # Then it answers 503 (worth a retry) and neither the refund nor the key is kept
    assert response.status_code == 503
    assert response["Retry-After"] == "1"
    assert response.json()["ok"] is False
    assert not Refund.objects.exists()
    assert not IdempotencyRecord.objects.exists()
    assert order("1009").refunded_cents == 0


def test_failing__then_healthy__retry_with_same_key_runs(client: Client) -> None:
    faults_set(mode="failing")
    post(client, "refunds", REFUND, key="k-1")
    faults_set(mode="healthy")
    response = post(client, "refunds", REFUND, key="k-1")
    assert response.status_code == 201
    assert order("1009").refunded_cents == 5000


def test_slow__lookup__answer_waits_at_least_delay(client: Client) -> None:
    faults_set(mode="slow", delay_ms=300)
    started = time.perf_counter()
    status = lookup(client)
    elapsed = time.perf_counter() - started
    assert status == 200
    assert elapsed >= 0.3


def test_slow__without_delay__waits_default(client: Client) -> None:
    assert faults_set(mode="slow").delay_ms == 2000


def test_flaky__four_requests__fail_and_succeed_in_turn(client: Client) -> None:
    faults_set(mode="flaky")
    assert [lookup(client) for _ in range(4)] == [503, 200, 503, 200]


def test_flaky__refund_retried__one_refund(client: Client) -> None:
    # Given a flaky sandbox: the first try fails, the retry (same key) goes through
    faults_set(mode="flaky")
    first = post(client, "refunds", REFUND, key="k-1")
    retry = post(client, "refunds", REFUND, key="k-1")
    assert (first.status_code, retry.status_code) == (503, 201)
    assert Refund.objects.count() == 1


def test_faults_endpoint__anonymous__401_unchanged(client: Client) -> None:
    response = post(client, "faults", {"mode": "failing"}, key=None)
    assert response.status_code == 401
    assert response.json()["ok"] is False
    assert not SandboxFaults.objects.exists()


@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.RISK, Role.FINANCE, None])
def test_faults_endpoint__without_oncall_or_admin__403_unchanged(
    client_for: Any, role: Role | None
) -> None:
    response = post(client_for(role), "faults", {"mode": "failing"}, key=None)
    assert response.status_code == 403
    assert "oncall or admin role" in response.json()["error"]
    assert not SandboxFaults.objects.exists()


@pytest.mark.parametrize("role", [Role.ONCALL, Role.ADMIN])
def test_faults_endpoint__oncall_or_admin__switch_set(client_for: Any, role: Role) -> None:
    client = client_for(role)
    response = post(client, "faults", {"mode": "slow", "delay_ms": 750}, key=None)
    assert response.status_code == 200
    assert response.json() == {"ok": True, "result": {"mode": "slow", "delay_ms": 750}}
    assert client.get("/sandbox/faults").json()["result"] == {"mode": "slow", "delay_ms": 750}


def test_faults_endpoint__get_never_set__healthy(client_for: Any) -> None:
    response = client_for(Role.ONCALL).get("/sandbox/faults")
    assert response.json() == {"ok": True, "result": {"mode": "healthy", "delay_ms": 0}}


def test_faults_endpoint__while_failing__still_answers_operators(client_for: Any) -> None:
    # The switch must stay reachable to switch a failing sandbox back.
    faults_set(mode="failing")
    response = post(client_for(Role.ONCALL), "faults", {"mode": "healthy"}, key=None)
    assert response.status_code == 200
    assert SandboxFaults.objects.get().mode == "healthy"


def test_faults_endpoint__right_token__switch_set(client: Client, settings: Any) -> None:
    settings.SANDBOX_TOKEN = "s3cret-sandbox-token"
    response = client.post(
        "/sandbox/faults", {"mode": "flaky"}, content_type="application/json",
        headers={"X-Sandbox-Token": "s3cret-sandbox-token"},
    )  # fmt: skip
    assert response.status_code == 200
    assert SandboxFaults.objects.get().mode == "flaky"


@pytest.mark.parametrize(("configured", "sent"), [("s3cret", "guess"), ("", "anything")])
def test_faults_endpoint__wrong_or_unconfigured_token__401(
    client: Client, settings: Any, configured: str, sent: str
) -> None:
    settings.SANDBOX_TOKEN = configured
    response = client.post(
        "/sandbox/faults", {"mode": "failing"}, content_type="application/json",
        headers={"X-Sandbox-Token": sent},
    )  # fmt: skip
    assert response.status_code == 401
    assert not SandboxFaults.objects.exists()


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"mode": "broken"}, "mode"),
        ({}, "mode"),
        ({"mode": "slow", "delay_ms": -1}, "delay_ms"),
        ({"mode": "slow", "delay_ms": 60001}, "delay_ms"),
        ({"mode": "slow", "delay": 5}, "delay"),
    ],
)
def test_faults_endpoint__bad_params__400_naming_field(
    client_for: Any, params: dict[str, Any], field: str
) -> None:
    response = post(client_for(Role.ONCALL), "faults", params, key=None)
    assert response.status_code == 400
    assert response.json()["field"] == field
    assert not SandboxFaults.objects.exists()


def test_command__slow_with_delay__set_and_reported() -> None:
    out = StringIO()
    call_command("sandbox_faults", "slow", "--delay-ms", "1500", stdout=out)
    assert out.getvalue().strip() == "sandbox faults: slow (1500 ms)"
    faults = SandboxFaults.objects.get()
    assert (faults.mode, faults.delay_ms) == ("slow", 1500)


def test_command__healthy_after_failing__healthy() -> None:
    call_command("sandbox_faults", "failing", stdout=StringIO())
    call_command("sandbox_faults", "healthy", stdout=StringIO())
    assert SandboxFaults.objects.get().mode == "healthy"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["wizard"], r"^mode: 'wizard' is not a mode; modes are healthy, slow, failing, flaky$"),
        (["slow", "--delay-ms", "-5"], r"^--delay-ms: must be between 0 and 60000$"),
    ],
)
def test_command__bad_input__command_error_naming_it(args: list[str], message: str) -> None:
    with pytest.raises(CommandError, match=message):
        call_command("sandbox_faults", *args)
    assert not SandboxFaults.objects.exists()


def test_command__bad_mode__exits_non_zero_with_one_line() -> None:
    result = subprocess.run(
        [sys.executable, "manage.py", "sandbox_faults", "wizard"],
        cwd=ROOT, env={**os.environ, "LOG_FORMAT": "text"}, capture_output=True, text=True,
        timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode != 0
    assert result.stderr.strip().splitlines() == [
        "CommandError: mode: 'wizard' is not a mode; modes are healthy, slow, failing, flaky"
    ]
