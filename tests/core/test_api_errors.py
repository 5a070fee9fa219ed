"""The API error format: {"detail": ..., "errors": [{"field": ..., "message": ...}]}, 4xx."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.roles import Role
from apps.core.api_errors import field_name

pytestmark = pytest.mark.django_db

FRANK_PASSWORD = "a long enough passphrase"
GOOD_USER = {
    "username": "frank",
    "email": "frank@example.com",
    "password": FRANK_PASSWORD,
    "roles": ["supervisor", "risk"],
}


def assert_error_format(body: dict[str, Any]) -> None:
    assert set(body) == {"detail", "errors"}
    assert isinstance(body["detail"], str)
    assert body["detail"]
    for error in body["errors"]:
        assert set(error) == {"field", "message"}


def test_api__malformed_json__400_naming_body(client_for: Any) -> None:
    # Given an admin's session
    client = client_for(Role.ADMIN)
    # When the body is not JSON
    response = client.post(
        "/api/v1/users", '{"username": "frank",', content_type="application/json"
    )
    # Then a 400 names the body and where the JSON broke, and nothing is created
    assert response.status_code == 400
    body = response.json()
    assert_error_format(body)
    assert body["detail"] == "The request body is not valid JSON."
    assert body["errors"][0]["field"] == "body"
    assert "line 1 column" in body["errors"][0]["message"]
    assert not User.objects.filter(username="frank").exists()


def test_api__unknown_role__422_naming_list_item(client_for: Any) -> None:
    client = client_for(Role.ADMIN)
    payload = {**GOOD_USER, "roles": ["supervisor", "wizard"]}
    response = client.post("/api/v1/users", payload, content_type="application/json")
    assert response.status_code == 422
    body = response.json()
    assert_error_format(body)
    assert body["errors"] == [
        {
            "field": "roles",
            "message": "unknown role 'wizard'; roles are supervisor, risk, finance, oncall, admin",
        }
    ]
    assert not User.objects.filter(username="frank").exists()


def test_api__missing_and_wrong_types__422_each_field_named(client_for: Any) -> None:
    client = client_for(Role.ADMIN)
    response = client.post(
        "/api/v1/users", {"username": 7, "roles": "risk"}, content_type="application/json"
    )
    assert response.status_code == 422
    body = response.json()
    assert_error_format(body)
    fields = {error["field"] for error in body["errors"]}
    assert fields == {"username", "password", "roles"}
    assert body["detail"].startswith("Invalid input: ")


def test_api__weak_password__422_naming_password(client_for: Any) -> None:
    client = client_for(Role.ADMIN)
    payload = {**GOOD_USER, "password": "12345678"}
    response = client.post("/api/v1/users", payload, content_type="application/json")
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == "password"


def test_api__create_user__201_with_roles(client_for: Any) -> None:
    client = client_for(Role.ADMIN)
    response = client.post("/api/v1/users", GOOD_USER, content_type="application/json")
    assert response.status_code == 201
    assert response.json()["roles"] == ["risk", "supervisor"]
    user = User.objects.get(username="frank")
    assert user.check_password(FRANK_PASSWORD)
    assert sorted(user.groups.values_list("name", flat=True)) == ["risk", "supervisor"]


def test_api__duplicate_username__422_naming_username(client_for: Any) -> None:
    client = client_for(Role.ADMIN)
    client.post("/api/v1/users", GOOD_USER, content_type="application/json")
    response = client.post(
        "/api/v1/users", {**GOOD_USER, "username": "FRANK"}, content_type="application/json"
    )
    assert response.status_code == 422
    assert response.json()["errors"] == [
        {"field": "username", "message": "'FRANK' is already taken"}
    ]


def test_api__without_admin_role__403_naming_role(client_for: Any) -> None:
    response = client_for(Role.RISK).post(
        "/api/v1/users", GOOD_USER, content_type="application/json"
    )
    assert response.status_code == 403
    assert response.json() == {"detail": "This needs the admin role.", "errors": []}


def test_api__anonymous__401(client: Client) -> None:
    response = client.get("/api/v1/me")
    assert response.status_code == 401
    assert_error_format(response.json())


def test_api__session_without_csrf_token__403_naming_header(client_for: Any) -> None:
    client = client_for(Role.ADMIN, enforce_csrf_checks=True)
    response = client.post("/api/v1/users", GOOD_USER, content_type="application/json")
    assert response.status_code == 403
    assert response.json()["errors"][0]["field"] == "X-CSRFToken"


def test_api__unknown_path__404_in_error_format(client: Client) -> None:
    response = client.get("/api/v1/no-such-thing")
    assert response.status_code == 404
    assert_error_format(response.json())


def test_api__me__roles_of_session_user(client_for: Any) -> None:
    response = client_for(Role.ONCALL).get("/api/v1/me")
    assert response.status_code == 200
    assert response.json() == {"username": "dana", "email": "", "roles": ["oncall"]}


def test_api_docs__served_locally(client: Client) -> None:
    response = client.get("/api/v1/docs")
    assert response.status_code == 200
    assert "/static/ninja/swagger-ui-bundle.js" in response.content.decode()
    schema = client.get("/api/v1/openapi.json").json()
    assert "/api/v1/users" in schema["paths"]


@pytest.mark.parametrize(
    ("loc", "expected"),
    [
        (("body", "payload", "roles", 1), "roles[1]"),
        (("body", "payload", "usage", "model"), "usage.model"),
        (("body", "payload"), "body"),
        (("query", "limit"), "limit"),
        (("path", "action_id"), "action_id"),
    ],
)
def test_field_name__pydantic_location__client_field(loc: tuple[Any, ...], expected: str) -> None:
    assert field_name(loc) == expected
