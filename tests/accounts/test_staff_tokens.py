"""Staff tokens: made by a command that prints them once, stored as a digest, revocable; a
token acts as its user with that user's roles on the staff API."""

from __future__ import annotations

import re
from datetime import timedelta
from io import StringIO
from typing import Any

import pytest
from django.core.management import CommandError, call_command
from django.test import Client
from django.utils import timezone

from apps.accounts.models import StaffToken
from apps.accounts.roles import Role
from apps.accounts.staff_tokens import token_digest
from apps.audit.models import AuditEvent

pytestmark = pytest.mark.django_db

URL = "/api/v1/killswitches"


def make_token(username: str, *args: str) -> str:
    out = StringIO()
    call_command("staff_token", "create", username, *args, stdout=out)
    found = re.search(r"^token: (est_\S+)$", out.getvalue(), re.MULTILINE)
    assert found, out.getvalue()
    return found.group(1)


def get(token: str) -> Any:
    return Client().get(URL, headers={"Authorization": f"Bearer {token}"})


def test_create__prints_once_and_stores_only_the_digest(user_for: Any) -> None:
    user_for(Role.ONCALL)
    out = StringIO()
    call_command("staff_token", "create", "dana", "--label", "pager", stdout=out)
    text = out.getvalue()
    token = re.search(r"^token: (est_\S+)$", text, re.MULTILINE).group(1)  # type: ignore[union-attr]
    assert "created a staff token for dana (oncall)" in text
    assert "shown once" in text
    record = StaffToken.objects.get()
    assert record.digest == token_digest(token)
    assert token not in str(list(StaffToken.objects.values()))
    assert record.label == "pager"
    assert AuditEvent.objects.filter(verb="staff_token.created").count() == 1


def test_token__oncall_user__opens_the_oncall_api(user_for: Any) -> None:
    user_for(Role.ONCALL)
    response = get(make_token("dana"))
    assert response.status_code == 200, response.content
    assert response.json() == []
    assert StaffToken.objects.get().last_used_at is not None


def test_token__user_without_oncall_role__403_naming_the_role(user_for: Any) -> None:
    user_for(Role.SUPERVISOR)
    response = get(make_token("alice"))
    assert response.status_code == 403
    assert response.json()["detail"] == "This needs the oncall role."


def test_token__revoked__401(user_for: Any) -> None:
    user_for(Role.ONCALL)
    token = make_token("dana")
    prefix = StaffToken.objects.get().prefix
    call_command("staff_token", "revoke", prefix, stdout=StringIO())
    response = get(token)
    assert response.status_code == 401
    assert response.json()["detail"] == f"Invalid staff token: token {prefix} was revoked."


def test_token__expired__401(user_for: Any) -> None:
    user_for(Role.ONCALL)
    token = make_token("dana", "--expires-in", "1")
    StaffToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    response = get(token)
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_token__user_deactivated__401(user_for: Any) -> None:
    user = user_for(Role.ONCALL)
    token = make_token("dana")
    user.is_active = False
    user.save()
    assert get(token).status_code == 401


@pytest.mark.parametrize("token", ["est_nonsense", "esk_0123456789ab_secret", "est_abc_x"])
def test_token__malformed_or_agent_key__401(user_for: Any, token: str) -> None:
    user_for(Role.ONCALL)
    response = get(token)
    assert response.status_code == 401
    assert response.json()["detail"].startswith("Invalid staff token: malformed token")


def test_token__right_prefix_wrong_secret__401(user_for: Any) -> None:
    user_for(Role.ONCALL)
    token = make_token("dana")
    response = get(token[:-4] + "AAAA")
    assert response.status_code == 401
    assert response.json()["detail"] == "Invalid staff token: unknown token."


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["create", "ghost"], "USERNAME: no user 'ghost'"),
        (["create", "dana", "--expires-in", "soon"], "--expires-in: 'soon' is not a whole number"),
        (["create", "dana", "--expires-in", "0"], "--expires-in: a positive number of days"),
        (["revoke", "nope"], "PREFIX: no staff token with prefix 'nope'"),
    ],
)
def test_command__bad_input__one_line_naming_the_argument(
    user_for: Any, args: list[str], message: str
) -> None:
    user_for(Role.ONCALL)
    with pytest.raises(CommandError) as failed:
        call_command("staff_token", *args, stdout=StringIO())
    assert message in str(failed.value)
    assert "\n" not in str(failed.value)
    assert not StaffToken.objects.exists()


def test_command__list__never_shows_the_secret(user_for: Any) -> None:
    user_for(Role.ONCALL)
    token = make_token("dana", "--label", "pager")
    out = StringIO()
    call_command("staff_token", "list", stdout=out)
    assert StaffToken.objects.get().prefix in out.getvalue()
    assert "pager" in out.getvalue()
    # (the secret is everything after the prefix: it may hold "_" itself)
    assert token.split("_", 2)[2] not in out.getvalue()
