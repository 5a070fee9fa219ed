from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.roles import Role
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db


def test_login_page__anonymous__shows_form(client: Client) -> None:
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert 'name="username"' in response.content.decode()
    assert 'name="csrfmiddlewaretoken"' in response.content.decode()


def test_login__right_password__lands_on_home(user_for: Any) -> None:
    user_for(Role.FINANCE)
    client = Client(enforce_csrf_checks=True)
    page = client.get("/accounts/login/")
    token = page.cookies["csrftoken"].value
    response = client.post(
        "/accounts/login/",
        {"username": "charlie", "password": PASSWORD, "csrfmiddlewaretoken": token},
    )
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert client.get("/").context["user"].username == "charlie"


def test_login__wrong_password__error_on_form(user_for: Any, client: Client) -> None:
    user_for(Role.FINANCE)
    response = client.post("/accounts/login/", {"username": "charlie", "password": "nope"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_login__without_csrf_token__refused(user_for: Any) -> None:
    user_for(Role.FINANCE)
    client = Client(enforce_csrf_checks=True)
    response = client.post("/accounts/login/", {"username": "charlie", "password": PASSWORD})
    assert response.status_code == 403


def test_logout__post__signs_out(client_for: Any) -> None:
    client = client_for(Role.ONCALL)
    response = client.post("/accounts/logout/")
    assert response.status_code == 302
    assert client.get("/oncall/").status_code == 302


def test_logout__get__not_allowed(client_for: Any) -> None:
    client = client_for(Role.ONCALL)
    assert client.get("/accounts/logout/").status_code == 405
    assert client.get("/oncall/").status_code == 200
