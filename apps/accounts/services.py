from __future__ import annotations

from collections.abc import Iterable

from django.contrib.auth.models import Group, User
from django.contrib.auth.password_validation import validate_password
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.db import transaction

from apps.accounts.roles import Role


class UserInputError(Exception):
    """Bad input for a user operation; names the field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@transaction.atomic
def user_create(
    *,
    username: str,
    password: str,
    roles: Iterable[Role],
    email: str = "",
    check_password: bool = True,
) -> User:
    """Create a user holding the given roles. The admin role also opens the Django admin."""
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
    return user


def role_groups(roles: Iterable[Role]) -> list[Group]:
    # The groups come from a data migration; recreating a missing one keeps a role grantable
    # even if someone deleted its group in the admin.
    return [Group.objects.get_or_create(name=role.value)[0] for role in roles]


@transaction.atomic
def user_set_roles(*, user: User, roles: Iterable[Role]) -> User:
    role_set = frozenset(roles)
    user.groups.set(role_groups(role_set))
    is_admin = Role.ADMIN in role_set
    user.is_staff = is_admin
    user.is_superuser = is_admin
    user.save(update_fields=["is_staff", "is_superuser"])
    return user
