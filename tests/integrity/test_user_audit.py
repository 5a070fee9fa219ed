"""Who may do what is itself audited: every user made (API, Django admin, `create_user`, the demo
seed), every role granted or revoked, every activation, deactivation, staff or superuser change,
password change and deletion writes an audit event in the transaction that makes it, naming who
made it, and never carrying a password or its hash."""

from __future__ import annotations

from io import StringIO
from typing import Any

import pytest
from django.contrib.auth.models import Group, User
from django.core.management import call_command
from django.test import Client
from django.urls import reverse

from apps.accounts import services
from apps.accounts.roles import Role
from apps.accounts.services import user_create, user_set_roles
from apps.audit.models import AuditEvent
from apps.audit.selectors import audit_verify

pytestmark = pytest.mark.django_db

PASSWORD = "a long enough passphrase"
GINA = {"username": "gina", "email": "gina@example.com", "password": PASSWORD,
        "roles": ["supervisor", "risk"]}  # fmt: skip


def events_of(user: User) -> list[AuditEvent]:
    return list(
        AuditEvent.objects.filter(target_type="auth.user", target_id=str(user.pk)).order_by(
            "sequence"
        )
    )


def verbs_of(user: User) -> list[str]:
    return [event.verb for event in events_of(user)]


def assert_no_secret(user: User, *secrets: str) -> None:
    """Neither the password nor the stored hash (nor any part of it) is in the user's events."""
    user.refresh_from_db()
    for event in events_of(user):
        text = event.payload_canonical or ""
        assert text, event.verb
        assert "password" not in event.payload, event.verb
        for secret in (*secrets, user.password, user.password.split("$")[-1]):
            assert secret not in text, event.verb


# POST /api/v1/users


def test_api_create_user__by_admin__created_event_naming_the_admin(client_for: Any) -> None:
    # Given erin, an admin, signed in
    client = client_for(Role.ADMIN)
    # When she creates gina with two roles
    response = client.post("/api/v1/users", GINA, content_type="application/json")
    # Then one event records the creation, by erin, through the API, with the roles granted
    assert response.status_code == 201, response.content
    gina = User.objects.get(username="gina")
    [event] = events_of(gina)
    assert (event.verb, event.actor_type, event.actor) == ("user.created", "user", "erin")
    assert event.subject == "user:gina"
    assert event.payload == {
        "via": "api",
        "username": "gina",
        "email": "gina@example.com",
        "roles": ["risk", "supervisor"],
        "groups": [],
        "is_active": True,
        "is_staff": False,
        "is_superuser": False,
        "permissions": [],
    }
    # And no secret reached the trail, which is intact
    assert_no_secret(gina, PASSWORD)
    assert audit_verify().intact


def test_api_create_admin__staff_and_superuser_in_the_event(client_for: Any) -> None:
    response = client_for(Role.ADMIN).post(
        "/api/v1/users", {**GINA, "roles": ["admin"]}, content_type="application/json"
    )
    assert response.status_code == 201
    [event] = events_of(User.objects.get(username="gina"))
    assert event.payload["roles"] == ["admin"]
    assert (event.payload["is_staff"], event.payload["is_superuser"]) == (True, True)


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"roles": ["wizard"]}, "roles"),
        ({"username": "erin"}, "username"),
        ({"password": "short"}, "password"),
        ({"email": "not-an-address"}, "email"),
    ],
)
def test_api_create_user__refused__no_user_and_no_event(
    client_for: Any, change: dict[str, Any], field: str
) -> None:
    # Given an admin, and the trail as it stands
    client = client_for(Role.ADMIN)
    before = AuditEvent.objects.count()
    # When the creation is refused
    response = client.post("/api/v1/users", {**GINA, **change}, content_type="application/json")
    # Then nothing was created and nothing recorded
    assert response.status_code == 422
    assert response.json()["errors"][0]["field"] == field
    assert not User.objects.filter(username="gina").exists()
    assert AuditEvent.objects.count() == before


def test_api_create_user__by_non_admin__403_no_event(client_for: Any) -> None:
    client = client_for(Role.RISK)
    before = AuditEvent.objects.count()
    response = client.post("/api/v1/users", GINA, content_type="application/json")
    assert response.status_code == 403
    assert not User.objects.filter(username="gina").exists()
    assert AuditEvent.objects.count() == before


def test_user_create__audit_fails__no_user_either(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given an audit trail that cannot be written to
    def broken(**kwargs: Any) -> None:
        raise RuntimeError("the trail is unavailable")

    monkeypatch.setattr(services, "audit_record", broken)
    # When a user is created
    with pytest.raises(RuntimeError, match="unavailable"):
        user_create(username="gina", password=PASSWORD, roles=[Role.RISK], actor="system:test")
    # Then the user does not exist: the record and the change commit together or not at all
    assert not User.objects.filter(username="gina").exists()


# manage.py create_user and the demo seed


def test_create_user_command__generated_password__event_by_the_command_without_it() -> None:
    # When an operator creates a user from the command line, letting it generate the password
    out = StringIO()
    call_command("create_user", "hal", "--role", "oncall", "--role", "admin", stdout=out)
    generated = out.getvalue().splitlines()[-1].removeprefix("password: ")
    # Then the creation is recorded as the command's, with its roles and flags
    hal = User.objects.get(username="hal")
    [event] = events_of(hal)
    assert (event.verb, event.actor_type, event.actor) == (
        "user.created",
        "system",
        "system:create_user",
    )
    assert event.payload["via"] == "command"
    assert event.payload["roles"] == ["admin", "oncall"]
    assert event.payload["is_superuser"] is True
    # And the password it printed is nowhere in the trail
    assert_no_secret(hal, generated)


def test_seed_demo__users_made_then_repaired__each_change_audited_once(
    settings: Any, tmp_path: Any
) -> None:
    from apps.demo.people import demo_users_ensure

    settings.VAR_DIR = tmp_path
    # Given the demo users, made by the seed
    demo_users_ensure()
    risk = User.objects.get(username="risk")
    assert verbs_of(risk) == ["user.created"]
    assert events_of(risk)[0].actor == "system:seed_demo"
    # When someone granted risk a role and changed its password, and the seed runs again
    user_set_roles(user=risk, roles=[Role.RISK, Role.ADMIN], actor="system:test")
    risk.set_password("something else entirely")
    risk.save()
    demo_users_ensure()
    # Then the seed's repair is audited as its own: the password, the flags and the role
    repair = [event for event in events_of(risk) if event.actor == "system:seed_demo"][1:]
    assert [event.verb for event in repair] == [
        "user.password_changed",
        "user.staff_revoked",
        "user.superuser_revoked",
        "user.role_revoked",
    ]
    assert repair[-1].payload == {"via": "demo", "role": "admin"}
    # And a third run, with nothing to repair, records nothing
    before = AuditEvent.objects.count()
    demo_users_ensure()
    assert AuditEvent.objects.count() == before


# user_set_roles


def test_set_roles__grant_and_revoke__one_event_each(user_for: Any) -> None:
    # Given alice, a supervisor
    alice = user_for(Role.SUPERVISOR)
    erin = user_for(Role.ADMIN)
    # When erin makes her a risk officer and finance reader instead
    user_set_roles(user=alice, roles=[Role.RISK, Role.FINANCE], actor=erin, via="test")
    # Then each grant and the revocation is an event by erin
    events = events_of(alice)[1:]
    assert [(event.verb, event.payload.get("role")) for event in events] == [
        ("user.role_granted", "finance"),
        ("user.role_granted", "risk"),
        ("user.role_revoked", "supervisor"),
    ]
    assert {event.actor for event in events} == {"erin"}
    # And setting the same roles again records nothing
    before = AuditEvent.objects.count()
    user_set_roles(user=alice, roles=[Role.FINANCE, Role.RISK], actor=erin)
    assert AuditEvent.objects.count() == before


# The Django admin


def change_form(user: User, **changes: Any) -> dict[str, Any]:
    """The admin's user change form as it would be posted for `user`, with `changes`."""
    user.refresh_from_db()
    values: dict[str, Any] = {
        "username": user.username,
        "first_name": user.first_name,
        "last_name": user.last_name,
        "email": user.email,
        "is_active": user.is_active,
        "is_staff": user.is_staff,
        "is_superuser": user.is_superuser,
        "groups": list(user.groups.values_list("pk", flat=True)),
        "user_permissions": [],
        "date_joined_0": user.date_joined.strftime("%Y-%m-%d"),
        "date_joined_1": user.date_joined.strftime("%H:%M:%S"),
        "last_login_0": "",
        "last_login_1": "",
    }
    values.update(changes)
    # An unticked checkbox is not posted at all.
    return {name: value for name, value in values.items() if value is not False}


def role(name: Role) -> int:
    pk: int = Group.objects.get(name=name.value).pk
    return pk


@pytest.fixture
def admin_client(client_for: Any) -> Client:
    client: Client = client_for(Role.ADMIN)
    return client


@pytest.fixture
def alice(user_for: Any) -> User:
    user: User = user_for(Role.SUPERVISOR)
    return user


def test_admin_add_user__created_event_by_the_admin(admin_client: Client) -> None:
    response = admin_client.post(
        reverse("admin:auth_user_add"),
        {"username": "gina", "usable_password": "true", "password1": PASSWORD,
         "password2": PASSWORD},
    )  # fmt: skip
    assert response.status_code == 302, response.content.decode()[:2000]
    gina = User.objects.get(username="gina")
    [event] = events_of(gina)
    assert (event.verb, event.actor, event.payload["via"]) == ("user.created", "erin", "admin")
    assert event.payload["roles"] == []
    assert_no_secret(gina, PASSWORD)


def test_admin_change__role_granted_and_revoked__events_by_the_admin(
    admin_client: Client, alice: User
) -> None:
    # When erin, in the admin, swaps alice's supervisor role for the admin role
    response = admin_client.post(
        reverse("admin:auth_user_change", args=[alice.pk]),
        change_form(alice, groups=[role(Role.ADMIN)]),
    )
    # Then the grant and the revocation are each an event by erin, through the admin
    assert response.status_code == 302, response.content.decode()[:3000]
    events = events_of(alice)[1:]
    assert [(event.verb, event.payload) for event in events] == [
        ("user.role_granted", {"via": "admin", "role": "admin"}),
        ("user.role_revoked", {"via": "admin", "role": "supervisor"}),
    ]
    assert {event.actor for event in events} == {"erin"}
    assert audit_verify().intact


def test_admin_change__flags__activation_staff_and_superuser_each_audited(
    admin_client: Client, alice: User
) -> None:
    url = reverse("admin:auth_user_change", args=[alice.pk])
    # When erin makes alice staff and superuser, then deactivates her
    admin_client.post(url, change_form(alice, is_staff=True, is_superuser=True))
    admin_client.post(url, change_form(alice, is_active=False))
    # Then each change is an event, in order
    assert verbs_of(alice)[1:] == [
        "user.staff_granted",
        "user.superuser_granted",
        "user.deactivated",
    ]
    # And when she is activated again, and her flags taken back, that is recorded too
    admin_client.post(url, change_form(alice, is_active=True, is_staff=False, is_superuser=False))
    assert verbs_of(alice)[4:] == [
        "user.activated",
        "user.staff_revoked",
        "user.superuser_revoked",
    ]


def test_admin_change__identity__old_and_new_values(admin_client: Client, alice: User) -> None:
    admin_client.post(
        reverse("admin:auth_user_change", args=[alice.pk]),
        change_form(alice, username="alice2", email="alice@example.com"),
    )
    [event] = events_of(alice)[1:]
    assert event.verb == "user.changed"
    assert event.payload["changes"] == {
        "username": ["alice", "alice2"],
        "email": ["", "alice@example.com"],
    }
    assert event.subject == "user:alice2"


def test_admin_change__nothing_changed_or_invalid__no_event(
    admin_client: Client, alice: User
) -> None:
    url = reverse("admin:auth_user_change", args=[alice.pk])
    before = AuditEvent.objects.count()
    # When the form is saved unchanged, and then with a change the form refuses
    unchanged = admin_client.post(url, change_form(alice))
    invalid = admin_client.post(url, change_form(alice, username="", groups=[role(Role.ADMIN)]))
    # Then nothing was recorded, and nothing changed
    assert unchanged.status_code == 302
    assert invalid.status_code == 200
    assert AuditEvent.objects.count() == before
    assert list(alice.groups.values_list("name", flat=True)) == ["supervisor"]


def test_admin_password_change__event_without_the_password(
    admin_client: Client, alice: User
) -> None:
    new = "a different long passphrase"
    response = admin_client.post(
        reverse("admin:auth_user_password_change", args=[alice.pk]),
        {"password1": new, "password2": new, "usable_password": "true"},
    )
    assert response.status_code == 302, response.content.decode()[:2000]
    [event] = events_of(alice)[1:]
    assert (event.verb, event.actor, event.payload) == (
        "user.password_changed",
        "erin",
        {"via": "admin", "usable": True},
    )
    assert_no_secret(alice, new)


def test_admin_delete_user__event_names_who_was_deleted(admin_client: Client, alice: User) -> None:
    pk = alice.pk
    response = admin_client.post(reverse("admin:auth_user_delete", args=[pk]), {"post": "yes"})
    assert response.status_code == 302
    assert not User.objects.filter(pk=pk).exists()
    event = AuditEvent.objects.get(verb="user.deleted")
    assert (event.target_id, event.actor) == (str(pk), "erin")
    assert event.payload == {
        "via": "admin",
        "username": "alice",
        "roles": ["supervisor"],
        "is_superuser": False,
    }


def test_admin_bulk_delete__one_event_per_user(admin_client: Client, user_for: Any) -> None:
    alice, bob = user_for(Role.SUPERVISOR), user_for(Role.RISK)
    response = admin_client.post(
        reverse("admin:auth_user_changelist"),
        {"action": "delete_selected", "_selected_action": [alice.pk, bob.pk], "post": "yes"},
    )
    assert response.status_code == 302
    deleted = AuditEvent.objects.filter(verb="user.deleted").order_by("sequence")
    assert [event.payload["username"] for event in deleted] == ["alice", "bob"]


def test_admin_role_group__cannot_be_renamed_or_deleted(admin_client: Client) -> None:
    # Renaming or deleting a role's group would change everyone's roles at once, unrecorded.
    group = Group.objects.get(name="admin")
    admin_client.post(reverse("admin:auth_group_change", args=[group.pk]), {"name": "staff"})
    deleted = admin_client.post(
        reverse("admin:auth_group_delete", args=[group.pk]), {"post": "yes"}
    )
    assert deleted.status_code == 403
    assert Group.objects.filter(name="admin").exists()
    assert not Group.objects.filter(name="staff").exists()
