from __future__ import annotations

from django.contrib.auth.models import User
from django.http import HttpRequest
from ninja import Router, Schema, Status
from ninja.security import django_auth
from pydantic import Field, field_validator

from apps.accounts.roles import Role, parse_role, user_roles
from apps.accounts.services import UserInputError, user_create
from apps.core.api_errors import ApiError, ErrorOut, FieldError

router = Router(tags=["accounts"])


def require_role(request: HttpRequest, *roles: Role) -> None:
    """API counterpart of the page decorator: 403 in the API error format naming the role."""
    if not user_roles(request.user).intersection(roles):
        names = " or ".join(role.value for role in roles)
        raise ApiError(403, f"This needs the {names} role.")


class MeOut(Schema):
    username: str
    email: str
    roles: list[str]


class UserIn(Schema):
    username: str = Field(min_length=1, max_length=150)
    email: str = ""
    password: str = Field(min_length=1)
    roles: list[str] = Field(min_length=1)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, value: list[str]) -> list[str]:
        return [parse_role(name).value for name in value]


class UserOut(Schema):
    id: int
    username: str
    email: str
    roles: list[str]


@router.get("/me", response={200: MeOut, 401: ErrorOut}, auth=django_auth, summary="Who am I")
def me(request: HttpRequest) -> MeOut:
    user = request.user
    assert isinstance(user, User)
    return MeOut(
        username=user.username,
        email=user.email,
        roles=sorted(role.value for role in user_roles(user)),
    )


@router.post(
    "/users",
    response={201: UserOut, **{c: ErrorOut for c in (400, 401, 403, 422)}},
    auth=django_auth,
    summary="Create a user",
)
def create_user(request: HttpRequest, payload: UserIn) -> Status[UserOut]:
    """Create a user with roles (admin role). The password must pass the password rules."""
    require_role(request, Role.ADMIN)
    try:
        user = user_create(
            username=payload.username,
            password=payload.password,
            email=payload.email,
            roles=[Role(name) for name in payload.roles],
            actor=request.user,
            via="api",
        )
    except UserInputError as exc:
        raise ApiError(
            422, f"Invalid input: {exc.field}.", [FieldError(exc.field, exc.message)]
        ) from None
    roles = sorted(role.value for role in user_roles(user))
    return Status(201, UserOut(id=user.pk, username=user.username, email=user.email, roles=roles))
