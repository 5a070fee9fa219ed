"""Staff API tokens: `est_<prefix>_<secret>`, sent as `Authorization: Bearer <token>`.

The prefix finds the row; only the SHA-256 digest of the whole token is stored and compared in
constant time. A token acts as its user: the user's roles at the time of each request apply,
so removing a role or deactivating the user takes effect at once; revoking the token ends it."""

from __future__ import annotations

import hashlib
import hmac
import secrets
from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone
from ninja.security import HttpBearer

from apps.accounts.models import StaffToken
from apps.audit.services import audit_record
from apps.core.api_errors import ApiError

TOKEN_PREFIX = "est"  # noqa: S105 (the public marker of a staff token, not a secret)
LABEL_MAX = 120


class TokenRejected(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class TokenInvalid(Exception):
    """Bad input for making or revoking a token; names the field."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _split(token: str) -> str | None:
    parts = token.split("_", 2)
    if len(parts) != 3 or parts[0] != TOKEN_PREFIX or len(parts[1]) != 12 or not parts[2]:
        return None
    return parts[1]


@dataclass(frozen=True)
class IssuedToken:
    token: str  # shown once
    record: StaffToken


@transaction.atomic
def staff_token_create(
    *,
    username: str,
    actor: AbstractBaseUser | AnonymousUser | str | None,
    label: str = "",
    expires_in_days: int | None = None,
) -> IssuedToken:
    user = User.objects.filter(username=username).first()
    if user is None:
        raise TokenInvalid("username", f"no user {username!r}")
    if not user.is_active:
        raise TokenInvalid("username", f"{username} is deactivated")
    label = label.strip()
    if len(label) > LABEL_MAX:
        raise TokenInvalid("label", f"at most {LABEL_MAX} characters, got {len(label)}")
    if expires_in_days is not None and expires_in_days <= 0:
        raise TokenInvalid("expires_in", f"a positive number of days, got {expires_in_days}")
    prefix = secrets.token_hex(6)
    token = f"{TOKEN_PREFIX}_{prefix}_{secrets.token_urlsafe(32)}"
    expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days else None
    record = StaffToken.objects.create(
        user=user, prefix=prefix, digest=token_digest(token), label=label, expires_at=expires_at
    )
    audit_record(
        actor=actor,
        verb="staff_token.created",
        target=record,
        data={
            "user": user.username,
            "prefix": prefix,
            "label": label,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return IssuedToken(token=token, record=record)


@transaction.atomic
def staff_token_revoke(
    *, prefix: str, actor: AbstractBaseUser | AnonymousUser | str | None
) -> StaffToken:
    record = StaffToken.objects.select_for_update().filter(prefix=prefix.strip()).first()
    if record is None:
        raise TokenInvalid("prefix", f"no staff token with prefix {prefix!r}")
    if record.revoked_at is None:
        record.revoked_at = timezone.now()
        record.save(update_fields=["revoked_at"])
        audit_record(
            actor=actor,
            verb="staff_token.revoked",
            target=record,
            data={"user": record.user.username, "prefix": record.prefix},
        )
    return record


def staff_token_authenticate(token: str) -> StaffToken:
    """The token's record if it is valid, unexpired, unrevoked and its user active; else
    TokenRejected saying which. Records the time of use at most once a minute."""
    prefix = _split(token)
    if prefix is None:
        raise TokenRejected("malformed token: expected est_<prefix>_<secret>")
    record = StaffToken.objects.select_related("user").filter(prefix=prefix).first()
    if record is None or not hmac.compare_digest(token_digest(token), record.digest):
        raise TokenRejected("unknown token")
    now = timezone.now()
    if record.revoked_at is not None:
        raise TokenRejected(f"token {prefix} was revoked")
    if record.expires_at is not None and record.expires_at <= now:
        raise TokenRejected(f"token {prefix} expired at {record.expires_at:%Y-%m-%d %H:%M} UTC")
    if not record.user.is_active:
        raise TokenRejected(f"the user of token {prefix} is deactivated")
    if record.last_used_at is None or now - record.last_used_at > timedelta(minutes=1):
        StaffToken.objects.filter(pk=record.pk).update(last_used_at=now)
        record.last_used_at = now
    return record


class StaffTokenAuth(HttpBearer):
    """`Authorization: Bearer est_...`: a staff token; the request acts as the token's user.

    Agent keys (`esk_...`) are not staff tokens: they reach the agent API only."""

    def authenticate(self, request: HttpRequest, token: str) -> User:
        try:
            record = staff_token_authenticate(token)
        except TokenRejected as exc:
            raise ApiError(401, f"Invalid staff token: {exc.reason}.") from None
        request.user = record.user
        request.staff_token = record  # type: ignore[attr-defined]
        return record.user


staff_token_auth = StaffTokenAuth()
