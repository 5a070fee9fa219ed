from __future__ import annotations

import importlib
from io import StringIO

import pytest
from django.apps import apps as django_apps
from django.contrib.auth.models import Group, User
from django.core.management import CommandError, call_command

pytestmark = pytest.mark.django_db


def test_roles_migration__creates_the_five_groups_once_and_removes_them() -> None:
    # The migration's own steps, on the real registry: a transactional test run earlier in the
    # same process flushes every table, so the groups migrate left may be gone by now.
    roles = importlib.import_module("apps.accounts.migrations.0001_roles")
    Group.objects.all().delete()

    roles.create_roles(django_apps, None)
    roles.create_roles(django_apps, None)  # run twice: still one group per role

    assert sorted(Group.objects.values_list("name", flat=True)) == sorted(
        ["supervisor", "risk", "finance", "oncall", "admin"]
    )
    roles.remove_roles(django_apps, None)
    assert not Group.objects.exists()


def test_create_user__roles_given__user_holds_them() -> None:
    out = StringIO()
    call_command(
        "create_user", "gina", "--role", "supervisor", "--role", "risk,finance",
        "--password", "a long enough passphrase", stdout=out,
    )  # fmt: skip
    user = User.objects.get(username="gina")
    assert sorted(user.groups.values_list("name", flat=True)) == ["finance", "risk", "supervisor"]
    assert not user.is_staff
    assert out.getvalue().strip() == "created gina (finance, risk, supervisor)"


def test_create_user__admin_role__opens_django_admin() -> None:
    call_command("create_user", "hal", "--role", "admin", "--password", "a long enough passphrase")
    user = User.objects.get(username="hal")
    assert user.is_staff
    assert user.is_superuser


def test_create_user__no_password__generated_and_printed_once() -> None:
    out = StringIO()
    call_command("create_user", "ivy", "--role", "oncall", stdout=out)
    password = out.getvalue().splitlines()[-1].removeprefix("password: ")
    assert User.objects.get(username="ivy").check_password(password)


def test_create_user__unknown_role__error_names_it() -> None:
    with pytest.raises(CommandError, match=r"^--role: unknown role 'wizard'"):
        call_command("create_user", "jon", "--role", "wizard")
    assert not User.objects.filter(username="jon").exists()


def test_create_user__no_role__refused() -> None:
    with pytest.raises(CommandError, match=r"^--role: give at least one role"):
        call_command("create_user", "jon")


def test_create_user__weak_password__refused_naming_password() -> None:
    with pytest.raises(CommandError, match=r"^password: "):
        call_command("create_user", "jon", "--role", "risk", "--password", "password")
    assert not User.objects.filter(username="jon").exists()


def test_create_user__taken_name__refused() -> None:
    call_command("create_user", "kim", "--role", "risk", "--password", "a long enough passphrase")
    with pytest.raises(CommandError, match=r"^username: 'Kim' is already taken"):
        call_command(
            "create_user", "Kim", "--role", "risk", "--password", "a long enough passphrase"
        )
