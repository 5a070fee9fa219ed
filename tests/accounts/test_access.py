"""Every role sees exactly its pages and gets 403 elsewhere: one test per role x page."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client

from apps.accounts.navigation import NAVIGATION, NavEntry
from apps.accounts.roles import Role

pytestmark = pytest.mark.django_db

ROLES = list(Role)


@pytest.mark.parametrize("entry", NAVIGATION, ids=lambda entry: entry.url_name)
@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.value)
def test_page__by_role__open_only_to_its_role(client_for: Any, role: Role, entry: NavEntry) -> None:
    # Given a user holding exactly one role
    client = client_for(role)
    # When they open a page
    response = client.get(entry.url)
    # Then it opens for the page's role and is refused, naming the role, for every other
    if role == entry.role:
        assert response.status_code == 200
    else:
        assert response.status_code == 403
        assert f"This page needs the {entry.role.value} role." in response.content.decode()
        assert f"Your roles: <strong>{role.value}</strong>" in response.content.decode()


@pytest.mark.parametrize("role", ROLES, ids=lambda role: role.value)
def test_navigation__by_role__shows_exactly_its_entries(client_for: Any, role: Role) -> None:
    response = client_for(role).get("/")
    assert response.status_code == 200
    shown = [entry["label"] for entry in response.context["nav_entries"]]
    assert shown == [entry.label for entry in NAVIGATION if entry.role == role]
    html = response.content.decode()
    for entry in NAVIGATION:
        link = f'<li><a href="{entry.url}"'
        assert (link in html) is (entry.role == role), entry.label


def test_navigation__several_roles__union_of_entries(user_for: Any) -> None:
    from apps.accounts.services import user_set_roles

    user = user_for(Role.RISK)
    user_set_roles(user=user, roles=[Role.RISK, Role.FINANCE])
    client = Client()
    client.force_login(user)
    shown = [entry["label"] for entry in client.get("/").context["nav_entries"]]
    assert shown == ["Decision Books", "Audit trail", "Balance sheet", "Model budgets"]


@pytest.mark.parametrize("entry", NAVIGATION, ids=lambda entry: entry.url_name)
def test_page__anonymous__sent_to_login(client: Client, entry: NavEntry) -> None:
    response = client.get(entry.url)
    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.parametrize("entry", NAVIGATION, ids=lambda entry: entry.url_name)
def test_page__user_without_role__403(client_for: Any, entry: NavEntry) -> None:
    response = client_for(None).get(entry.url)
    assert response.status_code == 403
    assert "Your roles: <strong>none</strong>" in response.content.decode()


def test_page__anonymous_htmx_request__told_to_navigate_to_login(client: Client) -> None:
    response = client.get("/reviews/", headers={"HX-Request": "true"})
    assert response.status_code == 204
    assert response["HX-Redirect"].startswith("/accounts/login/?next=/reviews/")


def test_superuser_flag__grants_no_product_role(db: Any) -> None:
    # Given a Django superuser who holds no role group
    from django.contrib.auth.models import User

    user = User.objects.create_superuser("root", "root@example.com", "x" * 20)
    client = Client()
    client.force_login(user)
    # Then product pages stay closed: roles come only from groups
    assert client.get("/oncall/").status_code == 403
    assert client.get("/admin/").status_code == 403
