"""/sandbox/access/grant, /revoke and /reset-mfa (which has no undo)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

import pytest
from django.test import Client

from apps.sandbox.models import AccessGrant, Employee, MfaReset
from apps.sandbox.selectors import effect_count
from tests.sandbox.conftest import post

pytestmark = pytest.mark.usefixtures("seeded")

GRANT: dict[str, Any] = {
    "employee_id": "E-103",
    "system": "github",
    "role": "editor",
    "duration_days": 14,
}


def test_grant__active_employee__201_time_limited_grant(client: Client) -> None:
    response = post(client, "access/grant", GRANT, key="k-grant", action="act-7")
    assert response.status_code == 201
    result = response.json()["result"]
    assert result["grant_id"].startswith("gr_")
    assert (result["employee_id"], result["system"], result["role"]) == (
        "E-103",
        "github",
        "editor",
    )
    assert result["status"] == "active"
    granted = datetime.fromisoformat(result["granted_at"])
    assert datetime.fromisoformat(result["expires_at"]) - granted == timedelta(days=14)
    grant = AccessGrant.objects.get()
    assert (grant.idempotency_key, grant.action_ref) == ("k-grant", "act-7")
    assert effect_count("k-grant") == 1


@pytest.mark.parametrize(
    ("change", "status", "field", "message"),
    [
        ({"employee_id": "E-999"}, 404, "employee_id", "there is no employee 'E-999'"),
        ({"employee_id": "E-106"}, 422, "employee_id", "E-106 has left the company"),
        ({"system": "mainframe"}, 422, "system", "'mainframe' is not a system the directory"),
        ({"role": "owner"}, 400, "role", "'owner' is not one of viewer, editor, admin"),
        ({"duration_days": 0}, 400, "duration_days", "must be at least 1"),
        ({"duration_days": 91}, 400, "duration_days", "must be at most 90"),
        ({"duration_days": "7"}, 400, "duration_days", "must be an integer"),
    ],
)
def test_grant__bad_request__4xx_naming_field_nothing_granted(
    client: Client, change: dict[str, Any], status: int, field: str, message: str
) -> None:
    response = post(client, "access/grant", {**GRANT, **change})
    assert response.status_code == status
    body = response.json()
    assert body["field"] == field
    assert message in body["error"]
    assert not AccessGrant.objects.exists()


@pytest.mark.parametrize("by", ["idempotency_key_of_original", "grant_id"])
def test_revoke__active_grant__revoked(client: Client, by: str) -> None:
    grant = post(client, "access/grant", GRANT, key="k-grant").json()["result"]
    reference = "k-grant" if by == "idempotency_key_of_original" else grant["grant_id"]
    response = post(client, "access/revoke", {by: reference}, key="k-revoke")
    assert response.status_code == 200
    result = response.json()["result"]
    assert result["changed"] is True
    assert result["grant"]["status"] == "revoked"
    assert AccessGrant.objects.get().revoked_by_key == "k-revoke"


def test_revoke__twice__second_changes_nothing(client: Client) -> None:
    post(client, "access/grant", GRANT, key="k-grant")
    first = post(client, "access/revoke", {"idempotency_key_of_original": "k-grant"}, key="k-r1")
    again = post(client, "access/revoke", {"idempotency_key_of_original": "k-grant"}, key="k-r2")
    assert again.status_code == 200
    assert again.json()["result"]["changed"] is False
    assert (
        again.json()["result"]["grant"]["revoked_at"]
        == (first.json()["result"]["grant"]["revoked_at"])
    )
    assert effect_count("k-r2") == 0


def test_revoke__original_result_echoed__revoked(client: Client) -> None:
    # The connector sends the original's result along with its key.
    grant = post(client, "access/grant", GRANT, key="k-grant").json()["result"]
    params = {"idempotency_key_of_original": "k-grant", **grant}
    response = post(client, "access/revoke", params, key="k-grant-undo")
    assert response.status_code == 200
    assert response.json()["result"]["grant"]["status"] == "revoked"


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"grant_id": "gr_unknown"}, 404, "grant_id"),
        ({"idempotency_key_of_original": "never-used"}, 404, "idempotency_key_of_original"),
        ({"idempotency_key_of_original": "k-grant", "grant_id": "gr_other"}, 422, "grant_id"),
        ({}, 400, "idempotency_key_of_original"),
    ],
)
def test_revoke__nothing_to_revoke__4xx_naming_field(
    client: Client, params: dict[str, str], status: int, field: str
) -> None:
    post(client, "access/grant", GRANT, key="k-grant")
    response = post(client, "access/revoke", params, key="k-r")
    assert response.status_code == status
    assert response.json()["field"] == field
    assert AccessGrant.objects.get().revoked_at is None


def test_reset_mfa__active_employee__201_factor_removed(client: Client) -> None:
    response = post(client, "access/reset-mfa", {"employee_id": "E-101"}, key="k-mfa")
    assert response.status_code == 201
    result = response.json()["result"]
    assert result["reset_id"].startswith("mfa_")
    assert result["employee_id"] == "E-101"
    assert Employee.objects.get(pk="E-101").mfa_enrolled is False
    assert effect_count("k-mfa") == 1


def test_reset_mfa__replayed__one_reset(client: Client) -> None:
    first = post(client, "access/reset-mfa", {"employee_id": "E-101"}, key="k-mfa")
    again = post(client, "access/reset-mfa", {"employee_id": "E-101"}, key="k-mfa")
    assert again.json() == first.json()
    assert MfaReset.objects.count() == 1


@pytest.mark.parametrize(
    ("employee_id", "status"),
    [("E-999", 404), ("E-106", 422)],
)
def test_reset_mfa__unknown_or_departed__4xx_employee_id(
    client: Client, employee_id: str, status: int
) -> None:
    response = post(client, "access/reset-mfa", {"employee_id": employee_id})
    assert response.status_code == status
    assert response.json()["field"] == "employee_id"
    assert not MfaReset.objects.exists()


def test_reset_mfa__no_undo_endpoint__404(client: Client) -> None:
    # Given a reset (the old second factor is gone: there is nothing to restore)
    post(client, "access/reset-mfa", {"employee_id": "E-101"}, key="k-mfa")
    # When someone looks for its undo
    response = post(client, "access/reset-mfa/undo", {"idempotency_key_of_original": "k-mfa"})
    # Then there is none
    assert response.status_code == 404
    assert Employee.objects.get(pk="E-101").mfa_enrolled is False
