"""The five roles of the product. A role is a Django group of the same name."""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING

from django.contrib.auth.models import PermissionsMixin

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.auth.models import AnonymousUser


class Role(StrEnum):
    SUPERVISOR = "supervisor"
    RISK = "risk"
    FINANCE = "finance"
    ONCALL = "oncall"
    ADMIN = "admin"

    @property
    def description(self) -> str:
        return ROLE_DESCRIPTIONS[self]


ROLE_DESCRIPTIONS: dict[Role, str] = {
    Role.SUPERVISOR: "decides held actions in the review queue",
    Role.RISK: "writes and publishes Decision Books, reads the audit trail",
    Role.FINANCE: "reads the Autonomy Balance Sheet",
    Role.ONCALL: "engages kill switches, drains queues, rolls back actions",
    Role.ADMIN: "registers agents, keys, tools and users",
}

_CACHE_ATTR = "_escapement_roles"


def parse_role(value: str) -> Role:
    try:
        return Role(value.strip().lower())
    except ValueError:
        known = ", ".join(role.value for role in Role)
        raise ValueError(f"unknown role {value!r}; roles are {known}") from None


def user_roles(user: AbstractBaseUser | AnonymousUser) -> frozenset[Role]:
    """The roles a user holds (cached on the user object for the request).

    Roles come only from group membership: a superuser flag opens the Django admin but grants no
    product role, so what a person may do is always visible from their groups.
    """
    if not isinstance(user, PermissionsMixin) or not user.is_active:
        return frozenset()
    cached: frozenset[Role] | None = getattr(user, _CACHE_ATTR, None)
    if cached is None:
        names = user.groups.values_list("name", flat=True)
        cached = frozenset(Role(name) for name in names if name in Role.__members__.values())
        setattr(user, _CACHE_ATTR, cached)
    return cached
