"""Users and their roles. Every creation and every change of what a user may do (roles, active,
staff, superuser, permissions), and of who they are, is written to the audit trail in the
transaction that makes it, naming who made it: a person, or "system:<command>" for a command.
Passwords and their hashes never reach the trail; that a password changed does."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from apps.accounts.roles import Role
from apps.audit.services import audit_record
from apps.core.errors import ServiceError

# Who acts: a user, "system:<what>" for a command or a seed, None for the system itself.
Actor = AbstractBaseUser | AnonymousUser | str | None

ROLE_NAMES = frozenset(role.value for role in Role)
IDENTITY_FIELDS = ("username", "email", "first_name", "last_name")
# (field, verb when it becomes true, verb when it becomes false)
FLAG_VERBS = (
    ("is_active", "user.activated", "user.deactivated"),
    ("is_staff", "user.staff_granted", "user.staff_revoked"),
    ("is_superuser", "user.superuser_granted", "user.superuser_revoked"),
)


class UserInputError(ServiceError):
    """Bad input for a user operation; names the field at fault.

    Unlike the other service errors it is raised field first, and reads "field: message":
    `manage.py create_user` prints it as it is, so the operator sees which option to fix."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field)

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


@dataclass(frozen=True)
class UserState:
    """What the audit trail follows of a user: who they are and what they may do. No secret:
    the password is not part of it."""

    username: str
    email: str
    first_name: str
    last_name: str
    is_active: bool
    is_staff: bool
    is_superuser: bool
    groups: frozenset[str]
    permissions: frozenset[str]


def user_state(user: User) -> UserState:
    """The user as the database has it now (groups and permissions included)."""
    permissions = user.user_permissions.values_list("content_type__app_label", "codename")
    return UserState(
        username=user.username,
        email=user.email,
        first_name=user.first_name,
        last_name=user.last_name,
        is_active=user.is_active,
        is_staff=user.is_staff,
        is_superuser=user.is_superuser,
        groups=frozenset(user.groups.values_list("name", flat=True)),
        permissions=frozenset(f"{app}.{codename}" for app, codename in permissions),
    )


def user_changes_record(
    *, actor: Actor, user: User, before: UserState | None, via: str
) -> list[str]:
    """Audit what changed of `user` since `before` (None: it has just been created), one event
    per change, and return their verbs. Call it inside the transaction of the change, once the
    change (groups included) is saved; nothing changed, nothing is written."""
    after = user_state(user)
    verbs: list[str] = []

    def record(verb: str, **data: Any) -> None:
        audit_record(
            actor=actor,
            verb=verb,
            target=user,
            subject=f"user:{after.username}",
            data={"via": via, **data},
        )
        verbs.append(verb)

    if before is None:
        record(
            "user.created",
            username=after.username,
            email=after.email,
            roles=sorted(after.groups & ROLE_NAMES),
            groups=sorted(after.groups - ROLE_NAMES),
            is_active=after.is_active,
            is_staff=after.is_staff,
            is_superuser=after.is_superuser,
            permissions=sorted(after.permissions),
        )
        return verbs
    changes = {
        name: [getattr(before, name), getattr(after, name)]
        for name in IDENTITY_FIELDS
        if getattr(before, name) != getattr(after, name)
    }
    if changes:
        record("user.changed", changes=changes)
    for name, granted, revoked in FLAG_VERBS:
        if getattr(before, name) != getattr(after, name):
            record(granted if getattr(after, name) else revoked)
    # A role is a group of the role's name; any other group is recorded as a group.
    for group in sorted(after.groups - before.groups):
        if group in ROLE_NAMES:
            record("user.role_granted", role=group)
        else:
            record("user.group_added", group=group)
    for group in sorted(before.groups - after.groups):
        if group in ROLE_NAMES:
            record("user.role_revoked", role=group)
        else:
            record("user.group_removed", group=group)
    if before.permissions != after.permissions:
        record(
            "user.permissions_changed",
            added=sorted(after.permissions - before.permissions),
            removed=sorted(before.permissions - after.permissions),
        )
    return verbs


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    roles: Iterable[Role],
    email: str = "",
    check_password: bool = True,
    actor: Actor = None,
    via: str = "",
) -> User:
    """Create a user holding the given roles, audited as `actor`'s doing (through `via`: api,
    admin, command, demo). The admin role also opens the Django admin."""
    username = username.strip()
    if not username:
        raise UserInputError("username", "must not be empty")
    if User.objects.filter(username__iexact=username).exists():
        raise UserInputError("username", f"{username!r} is already taken")
    if email:
        try:
            validate_email(email)
        except ValidationError:
            raise UserInputError("email", f"{email!r} is not a valid email address") from None
    role_set = frozenset(roles)
    candidate = User(username=username, email=email)
    if check_password:
        try:
            validate_password(password, user=candidate)
        except ValidationError as exc:
            raise UserInputError("password", " ".join(exc.messages)) from None
    elif not password:
        raise UserInputError("password", "must not be empty")
    is_admin = Role.ADMIN in role_set
    user = User.objects.create_user(
        username=username,
        email=email,
        password=password,
        is_staff=is_admin,
        is_superuser=is_admin,
    )
    user.groups.set(role_groups(role_set))
    user_changes_record(actor=actor, user=user, before=None, via=via)
    return user


def role_groups(roles: Iterable[Role]) -> list[Group]:
    # The groups come from a data migration; recreating a missing one keeps a role grantable
    # even if someone deleted its group in the admin.
    return [Group.objects.get_or_create(name=role.value)[0] for role in roles]


@transaction.atomic
def user_set_roles(
    *, user: User, roles: Iterable[Role], actor: Actor = None, via: str = ""
) -> User:
    """Give the user exactly these roles (the admin role with the Django admin), audited."""
    before = user_state(User.objects.select_for_update().get(pk=user.pk))
    role_set = frozenset(roles)
    user.groups.set(role_groups(role_set))
    is_admin = Role.ADMIN in role_set
    user.is_staff = is_admin
    user.is_superuser = is_admin
    user.save(update_fields=["is_staff", "is_superuser"])
    user_changes_record(actor=actor, user=user, before=before, via=via)
    return user


@transaction.atomic
def user_set_password(*, user: User, password: str, actor: Actor = None, via: str = "") -> User:
    """Set the user's password; the trail records that it changed, never the password."""
    user.set_password(password)
    user.save(update_fields=["password"])
    audit_record(
        actor=actor,
        verb="user.password_changed",
        target=user,
        subject=f"user:{user.username}",
        data={"via": via},
    )
    return user
