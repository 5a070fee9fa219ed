"""Writing Decision Books: drafts, publishing, rollback. Every change is audited in the same
transaction."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import AbstractBaseUser, AnonymousUser, User
from django.db import transaction
from django.db.models import Max
from django.utils import timezone

from apps.accounts.roles import Role, user_roles
from apps.audit.services import audit_record
from apps.books.compilation import book_compile, book_problems
from apps.books.models import BookVersion
from apps.books.policy.validation import PolicyProblem
from apps.core.errors import ServiceError
from apps.registry.models import Workflow

# The fields that make up a book's content: copied into new drafts and rollbacks, compared by
# the diff, and frozen once published.
CONTENT_FIELDS = (
    "objective",
    "data_sources",
    "tools",
    "confidence_threshold",
    "allowed_segments",
    "business_hours_start",
    "business_hours_end",
    "weekdays_only",
    "raw_policies",
    "spot_check_rate",
    "red_two_approvers",
    "sla_minutes",
    "slos",
    "per_outcome_cap_cents",
    "monthly_budget_cents",
    "currency",
    "escalation_owner_id",
    "autonomy_mode",
    "model_policy",
    "baseline_minutes",
)


class BookError(ServiceError):
    """A book operation that cannot be done; names the field at fault when there is one."""


class PublishRefused(BookError):
    def __init__(self, problems: list[PolicyProblem]) -> None:
        super().__init__(f"The draft has {len(problems)} problem(s); fix them to publish.")
        self.problems = problems


@dataclass(frozen=True)
class Changes:
    before: dict[str, Any]
    after: dict[str, Any]


def _require_risk(user: AbstractBaseUser | AnonymousUser) -> None:
    if Role.RISK not in user_roles(user):
        raise BookError("Only the risk role may change Decision Books.")


def _content(version: BookVersion) -> dict[str, Any]:
    return {name: getattr(version, name) for name in CONTENT_FIELDS}


def _jsonable(values: Mapping[str, Any]) -> dict[str, Any]:
    return {
        key: (
            str(value) if not isinstance(value, (int, str, list, dict, bool, type(None))) else value
        )
        for key, value in values.items()
    }


@transaction.atomic
def workflow_create(*, slug: str, name: str, description: str, user: User) -> Workflow:
    _require_risk(user)
    if Workflow.objects.filter(slug=slug).exists():
        raise BookError(f"A workflow {slug!r} exists already.", field="slug")
    workflow = Workflow(slug=slug, name=name, description=description)
    workflow.full_clean()
    workflow.save()
    audit_record(
        actor=user, verb="workflow.created", target=workflow, data={"slug": slug, "name": name}
    )
    return workflow


@transaction.atomic
def draft_create(*, workflow: Workflow, user: User) -> BookVersion:
    """Open a draft, starting from the active version's content (or empty for a new workflow)."""
    _require_risk(user)
    Workflow.objects.select_for_update().get(pk=workflow.pk)
    existing = BookVersion.objects.filter(
        workflow=workflow, status=BookVersion.Status.DRAFT
    ).first()
    if existing is not None:
        return existing
    active = BookVersion.objects.filter(
        workflow=workflow, status=BookVersion.Status.PUBLISHED
    ).first()
    draft = BookVersion(workflow=workflow, created_by=user, based_on=active)
    if active is not None:
        for name, value in _content(active).items():
            setattr(draft, name, value)
    draft.policy_text, draft.cedar_schema = book_compile(draft)
    draft.save()
    audit_record(
        actor=user,
        verb="book.draft_created",
        target=draft,
        data={"workflow": workflow.slug, "based_on": active.label if active else None},
    )
    return draft


@transaction.atomic
def draft_update(*, version_id: int, user: User, values: Mapping[str, Any]) -> BookVersion:
    """Change a draft's content. Published versions never change: this refuses them."""
    _require_risk(user)
    draft = BookVersion.objects.select_for_update().get(pk=version_id)
    if not draft.is_draft:
        raise BookError(f"Version {draft.label} is {draft.status} and cannot be changed.")
    unknown = set(values) - set(CONTENT_FIELDS)
    if unknown:
        raise BookError(f"Not a book field: {', '.join(sorted(unknown))}", field=sorted(unknown)[0])
    before = _content(draft)
    for name, value in values.items():
        setattr(draft, name, value)
    draft.policy_text, draft.cedar_schema = book_compile(draft)
    draft.save()
    after = _content(draft)
    changed = sorted(name for name in CONTENT_FIELDS if before[name] != after[name])
    if changed:
        audit_record(
            actor=user,
            verb="book.draft_updated",
            target=draft,
            data={
                "workflow": draft.workflow.slug,
                "changed": changed,
                "after": _jsonable({n: after[n] for n in changed}),
            },
        )
    return draft


def _next_number(workflow: Workflow) -> int:
    latest = BookVersion.objects.filter(workflow=workflow).aggregate(latest=Max("number"))["latest"]
    return (latest or 0) + 1


def _supersede_active(workflow: Workflow, now: Any) -> BookVersion | None:
    active = (
        BookVersion.objects.select_for_update()
        .filter(workflow=workflow, status=BookVersion.Status.PUBLISHED)
        .first()
    )
    if active is not None:
        active.status = BookVersion.Status.SUPERSEDED
        active.superseded_at = now
        active.save(update_fields=["status", "superseded_at"])
    return active


@transaction.atomic
def book_publish(*, version_id: int, user: User, change_note: str) -> BookVersion:
    """Make a draft the workflow's one active version. The workflow row is locked first, so
    concurrent publishes of one workflow run one after the other; the second finds nothing left
    to publish."""
    _require_risk(user)
    note = change_note.strip()
    if not note:
        raise BookError("Say what changed and why: a change note is required.", field="change_note")
    workflow_id = BookVersion.objects.values_list("workflow_id", flat=True).get(pk=version_id)
    workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
    draft = BookVersion.objects.select_for_update().get(pk=version_id)
    if not draft.is_draft:
        raise BookError(f"Version {draft.label} is already {draft.status}.")
    problems = book_problems(draft)
    if problems:
        raise PublishRefused(problems)
    now = timezone.now()
    previous = _supersede_active(workflow, now)
    draft.policy_text, draft.cedar_schema = book_compile(draft)
    draft.number = _next_number(workflow)
    draft.status = BookVersion.Status.PUBLISHED
    draft.change_note = note
    draft.published_by = user
    draft.published_at = now
    draft.save()
    audit_record(
        actor=user,
        verb="book.published",
        target=draft,
        data={
            "workflow": workflow.slug,
            "version": draft.number,
            "previous": previous.number if previous else None,
            "change_note": note,
        },
    )
    return draft


@transaction.atomic
def book_rollback(*, version_id: int, user: User, change_note: str) -> BookVersion:
    """Republish an earlier version's content as a new version (history is never rewritten)."""
    _require_risk(user)
    note = change_note.strip()
    if not note:
        raise BookError("Say why you roll back: a change note is required.", field="change_note")
    workflow_id = BookVersion.objects.values_list("workflow_id", flat=True).get(pk=version_id)
    workflow = Workflow.objects.select_for_update().get(pk=workflow_id)
    source = BookVersion.objects.get(pk=version_id)
    if source.is_draft:
        raise BookError(
            "Only a published version can be rolled back to; publish the draft instead."
        )
    if source.status == BookVersion.Status.PUBLISHED:
        raise BookError(f"{source.label} is already the active version.")
    now = timezone.now()
    previous = _supersede_active(workflow, now)
    restored = BookVersion(
        workflow=workflow,
        created_by=user,
        based_on=source,
        number=_next_number(workflow),
        status=BookVersion.Status.PUBLISHED,
        change_note=note,
        published_by=user,
        published_at=now,
        policy_text=source.policy_text,
        cedar_schema=source.cedar_schema,
    )
    for name, value in _content(source).items():
        setattr(restored, name, value)
    restored.save()
    audit_record(
        actor=user,
        verb="book.rolled_back",
        target=restored,
        data={
            "workflow": workflow.slug,
            "version": restored.number,
            "restores": source.number,
            "previous": previous.number if previous else None,
            "change_note": note,
        },
    )
    return restored
