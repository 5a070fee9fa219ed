"""Access to internal systems: time-limited grants (revocable) and MFA resets (not undoable:
the old second factor is gone)."""

from __future__ import annotations

from datetime import timedelta

from django.db import transaction
from django.utils import timezone

from apps.sandbox.models import AccessGrant, Employee, MfaReset
from apps.sandbox.params import SandboxError

# The systems the company directory manages access to.
SYSTEMS = ("github", "jira", "salesforce", "netsuite", "zendesk", "aws", "looker")


def _active_employee(employee_id: str, *, doing: str) -> Employee:
    employee = Employee.objects.select_for_update().filter(pk=employee_id).first()
    if employee is None:
        raise SandboxError(404, f"there is no employee {employee_id!r}", "employee_id")
    if not employee.active:
        raise SandboxError(
            422, f"{employee.pk} has left the company; {doing} is refused", "employee_id"
        )
    return employee


@transaction.atomic
def access_grant(
    *,
    employee_id: str,
    system: str,
    role: str,
    duration_days: int,
    idempotency_key: str,
    action_ref: str = "",
) -> AccessGrant:
    """Give an employee a role in a system until now + duration_days."""
    if system not in SYSTEMS:
        raise SandboxError(
            422,
            f"{system!r} is not a system the directory manages ({', '.join(SYSTEMS)})",
            "system",
        )
    employee = _active_employee(employee_id, doing="granting access")
    now = timezone.now()
    return AccessGrant.objects.create(
        employee=employee,
        system=system,
        role=role,
        granted_at=now,
        expires_at=now + timedelta(days=duration_days),
        idempotency_key=idempotency_key,
        action_ref=action_ref,
    )


@transaction.atomic
def access_revoke(
    *,
    original_key: str | None = None,
    grant_id: str | None = None,
    idempotency_key: str,
) -> tuple[AccessGrant, bool]:
    """Revoke a grant, named by the key that made it or by its id (or both, if they agree).
    Returns the grant and whether this call changed anything (revoking a revoked grant changes
    nothing)."""
    grants = AccessGrant.objects.select_for_update()
    if original_key is not None:
        grant = grants.filter(idempotency_key=original_key).first()
        if grant is None:
            raise SandboxError(
                404,
                f"no access was granted with key {original_key!r}",
                "idempotency_key_of_original",
            )
        if grant_id is not None and grant_id != grant.pk:
            raise SandboxError(
                422, f"{grant_id!r} is not the grant made with key {original_key!r}", "grant_id"
            )
    else:
        grant = grants.filter(pk=grant_id).first()
        if grant is None:
            raise SandboxError(404, f"there is no access grant {grant_id!r}", "grant_id")
    if grant.revoked_at is not None:
        return grant, False
    grant.revoked_at = timezone.now()
    grant.revoked_by_key = idempotency_key
    grant.save(update_fields=["revoked_at", "revoked_by_key"])
    return grant, True


@transaction.atomic
def mfa_reset(*, employee_id: str, idempotency_key: str, action_ref: str = "") -> MfaReset:
    """Remove an employee's second factor so they can enrol a new device."""
    employee = _active_employee(employee_id, doing="an MFA reset")
    employee.mfa_enrolled = False
    employee.save(update_fields=["mfa_enrolled"])
    return MfaReset.objects.create(
        employee=employee, idempotency_key=idempotency_key, action_ref=action_ref
    )
