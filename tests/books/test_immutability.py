"""A published (or superseded) Decision Book version never changes: not through the services,
not through the admin, not even through SQL. Only its retirement may be written."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import DatabaseError, connection, transaction
from django.test import Client
from django.urls import reverse

from apps.accounts.roles import Role
from apps.accounts.services import user_create
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.books.services import BookError, draft_create, draft_update
from tests.conftest import PASSWORD
from tests.factories import REFUND_CONTROLS, make_published_book, make_tool, make_workflow


@dataclass(frozen=True)
class History:
    superseded: BookVersion  # v1
    published: BookVersion  # v2, the active one
    draft: BookVersion  # the next one, being written
    author: User


@pytest.fixture
def history(user_for: Any) -> History:
    # Given a workflow whose book has a superseded v1, an active v2 and an open draft
    author = user_for(Role.RISK)
    make_tool()
    workflow = make_workflow()
    make_published_book(workflow=workflow, author=author, note="first")
    make_published_book(
        workflow=workflow,
        author=author,
        values={**REFUND_CONTROLS, "objective": "Refund within a day."},
        note="faster",
    )
    draft = draft_create(workflow=workflow, user=author)
    by_number = {version.number: version for version in BookVersion.objects.all()}
    assert by_number[1].status == BookVersion.Status.SUPERSEDED
    assert by_number[2].status == BookVersion.Status.PUBLISHED
    return History(superseded=by_number[1], published=by_number[2], draft=draft, author=author)


def row(version: BookVersion) -> dict[str, Any]:
    """Every stored column of a version, read afresh in a transaction of its own."""
    with transaction.atomic():
        values = BookVersion.objects.filter(pk=version.pk).values().first()
    assert values is not None, f"version {version.pk} is gone"
    return dict(values)


# --- the services --------------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["published", "superseded"])
def test_draft_update__published_or_superseded__refused_and_unchanged(
    history: History, which: str
) -> None:
    version: BookVersion = getattr(history, which)
    before = row(version)
    with pytest.raises(BookError, match=rf"^Version v{version.number} is {which} and cannot be"):
        draft_update(version_id=version.pk, user=history.author, values={"objective": "changed"})
    assert row(version) == before


@pytest.mark.django_db
def test_draft_update__draft__changed_and_audited(history: History) -> None:
    draft_update(version_id=history.draft.pk, user=history.author, values={"objective": "new"})
    assert row(history.draft)["objective"] == "new"
    event = AuditEvent.objects.filter(verb="book.draft_updated").last()
    assert event is not None
    assert event.payload["changed"] == ["objective"]


@pytest.mark.django_db
def test_model_save__published_version_changed_in_memory__database_refuses(
    history: History,
) -> None:
    # Even code that skips the services cannot write a published version
    version = BookVersion.objects.get(pk=history.published.pk)
    version.objective = "rewritten"
    with pytest.raises(DatabaseError, match="cannot be changed"), transaction.atomic():
        version.save()
    assert row(history.published)["objective"] == "Refund within a day."


# --- the admin -----------------------------------------------------------------------------


@pytest.fixture
def risk_admin(db: Any) -> Client:
    """A client signed in as someone holding both the admin and the risk role: the admin may
    not refuse them for want of a role, only because of what the version is."""
    user = user_create(username="frank", password=PASSWORD, roles=[Role.ADMIN, Role.RISK])
    client = Client()
    client.force_login(user)
    return client


JSON_FIELDS = ("data_sources", "tools", "allowed_segments", "slos", "model_policy")
CHECKBOXES = ("weekdays_only", "red_two_approvers")


def change_form(version: BookVersion, **changes: Any) -> dict[str, Any]:
    """The admin change form for a version as the browser would post it, with `changes`."""
    values = {**row(version), **changes}
    data: dict[str, Any] = {}
    for name in (
        "objective", "confidence_threshold", "business_hours_start", "business_hours_end",
        "raw_policies", "spot_check_rate", "sla_minutes", "per_outcome_cap_cents",
        "monthly_budget_cents", "currency", "autonomy_mode", "baseline_minutes",
    ):  # fmt: skip
        data[name] = "" if values[name] is None else str(values[name])
    for name in JSON_FIELDS:
        data[name] = json.dumps(values[name])
    for name in CHECKBOXES:
        if values[name]:
            data[name] = "on"
    data["escalation_owner"] = values["escalation_owner_id"] or ""
    return data


def change_url(version: BookVersion) -> str:
    return reverse("admin:books_bookversion_change", args=[version.pk])


@pytest.mark.django_db
def test_book_admin__list__shows_versions_by_workflow_number_and_status(
    history: History, risk_admin: Client
) -> None:
    response = risk_admin.get(reverse("admin:books_bookversion_changelist"))
    assert response.status_code == 200
    rows = list(response.context["cl"].result_list)
    assert [(version.number, version.status) for version in rows] == [
        (None, "draft"),
        (2, "published"),
        (1, "superseded"),
    ]


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["published", "superseded"])
def test_book_admin__published_or_superseded__change_view_read_only(
    history: History, risk_admin: Client, which: str
) -> None:
    version: BookVersion = getattr(history, which)
    response = risk_admin.get(change_url(version))
    assert response.status_code == 200
    html = response.content.decode()
    assert 'name="_save"' not in html
    assert 'name="objective"' not in html
    assert row(version)["objective"] in html


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["published", "superseded"])
def test_book_admin__published_or_superseded__change_post_refused(
    history: History, risk_admin: Client, which: str
) -> None:
    # Given the form a browser would post for the version, with a new objective
    version: BookVersion = getattr(history, which)
    before = row(version)
    # When it is posted
    response = risk_admin.post(change_url(version), change_form(version, objective="changed"))
    # Then it is refused and nothing changed
    assert response.status_code == 403
    assert row(version) == before


@pytest.mark.django_db
@pytest.mark.parametrize("which", ["published", "superseded"])
def test_book_admin__published_or_superseded__delete_refused(
    history: History, risk_admin: Client, which: str
) -> None:
    version: BookVersion = getattr(history, which)
    url = reverse("admin:books_bookversion_delete", args=[version.pk])
    assert risk_admin.get(url).status_code == 403
    assert risk_admin.post(url, {"post": "yes"}).status_code == 403
    assert BookVersion.objects.filter(pk=version.pk).exists()


@pytest.mark.django_db
def test_book_admin__bulk_delete_of_published__refused(
    history: History, risk_admin: Client
) -> None:
    # Given the active version and nothing that points to it (the draft is based on it: gone)
    history.draft.delete()
    # When it is deleted through the list's "delete selected" action, confirmed
    response = risk_admin.post(
        reverse("admin:books_bookversion_changelist"),
        {"action": "delete_selected", "_selected_action": [history.published.pk], "post": "yes"},
    )
    # Then it is refused for want of permission, and the version stays
    assert response.status_code == 403
    assert row(history.published)["status"] == "published"


@pytest.mark.django_db
def test_book_admin__add__refused(history: History, risk_admin: Client) -> None:
    # Drafts are opened from the active version on the book pages, not made up in the admin
    assert risk_admin.get(reverse("admin:books_bookversion_add")).status_code == 403


@pytest.mark.django_db
def test_book_admin__draft__changed_through_the_service(
    history: History, risk_admin: Client
) -> None:
    # When the draft's objective and raw policies are changed in the admin
    raw = (
        '@id("no-weekend")\n@message("Not at weekends")\n'
        "forbid(principal, action, resource) when { context.weekday > 5 };"
    )
    response = risk_admin.post(
        change_url(history.draft), change_form(history.draft, objective="new", raw_policies=raw)
    )
    # Then they are saved, the policy text recompiled, and the change audited
    assert response.status_code == 302
    stored = row(history.draft)
    assert (stored["objective"], stored["raw_policies"], stored["status"]) == ("new", raw, "draft")
    assert raw in stored["policy_text"]
    event = AuditEvent.objects.filter(verb="book.draft_updated").last()
    assert event is not None
    assert event.actor == "frank"
    assert event.payload["changed"] == ["objective", "raw_policies"]


@pytest.mark.django_db
def test_book_admin__draft_json_box_emptied__stored_as_empty_not_null(
    history: History, risk_admin: Client
) -> None:
    response = risk_admin.post(change_url(history.draft), change_form(history.draft) | {"slos": ""})
    assert response.status_code == 302
    assert row(history.draft)["slos"] == {}


@pytest.mark.django_db
def test_book_admin__draft__admin_without_risk_role_reads_only(
    history: History, client_for: Any
) -> None:
    client = client_for(Role.ADMIN)
    assert 'name="_save"' not in client.get(change_url(history.draft)).content.decode()
    response = client.post(change_url(history.draft), change_form(history.draft, objective="x"))
    assert response.status_code == 403
    assert row(history.draft)["objective"] == "Refund within a day."


@pytest.mark.django_db
def test_book_admin__draft__deleted(history: History, risk_admin: Client) -> None:
    url = reverse("admin:books_bookversion_delete", args=[history.draft.pk])
    assert risk_admin.post(url, {"post": "yes"}).status_code == 302
    assert not BookVersion.objects.filter(pk=history.draft.pk).exists()


# --- the database itself -------------------------------------------------------------------
# These run outside a test transaction: each statement commits or fails on its own, and the
# row is read back in a transaction of its own, as any later reader would see it.


def execute(sql: str, *params: Any) -> int:
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        count: int = cursor.rowcount
        return count


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("which", ["published", "superseded"])
@pytest.mark.parametrize(
    ("column", "value"),
    [
        ("objective", "x"),
        ("raw_policies", "permit(principal, action, resource);"),
        ("policy_text", "permit(principal, action, resource);"),
        ("change_note", "rewritten history"),
        ("number", 99),
        ("status", "draft"),
    ],
)
def test_database__update_published_or_superseded__refused_row_unchanged(
    history: History, which: str, column: str, value: Any
) -> None:
    version: BookVersion = getattr(history, which)
    before = row(version)
    with pytest.raises(DatabaseError, match=rf"book version {version.pk} is {which} and cannot"):
        execute(f"UPDATE books_bookversion SET {column} = %s WHERE id = %s", value, version.pk)  # noqa: S608
    assert row(version) == before


@pytest.mark.django_db(transaction=True)
def test_database__raw_update_objective__database_error_and_unchanged(history: History) -> None:
    # The plain case spelled out. (psycopg reports PL/pgSQL's RAISE, SQLSTATE P0001, as a
    # ProgrammingError; any DatabaseError would do: what matters is the refusal.)
    with pytest.raises(DatabaseError, match="cannot be changed"):
        execute("UPDATE books_bookversion SET objective = 'x' WHERE id = %s", history.published.pk)
    assert row(history.published)["objective"] == "Refund within a day."


@pytest.mark.django_db(transaction=True)
def test_database__queryset_update_of_published__refused(history: History) -> None:
    with pytest.raises(DatabaseError, match="cannot be changed"):
        BookVersion.objects.filter(pk=history.published.pk).update(sla_minutes=1)
    assert row(history.published)["sla_minutes"] == 60


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("which", ["published", "superseded"])
def test_database__delete_published_or_superseded__refused(history: History, which: str) -> None:
    version: BookVersion = getattr(history, which)
    with pytest.raises(
        DatabaseError, match=rf"book version {version.pk} is {which} and cannot be deleted"
    ):
        execute("DELETE FROM books_bookversion WHERE id = %s", version.pk)
    assert row(version)["status"] == which


@pytest.mark.django_db(transaction=True)
def test_database__supersede_published__allowed(history: History) -> None:
    # Retirement is the one write a published version admits
    before = row(history.published)
    updated = execute(
        "UPDATE books_bookversion SET status = 'superseded', superseded_at = now() WHERE id = %s",
        history.published.pk,
    )
    assert updated == 1
    after = row(history.published)
    assert after["status"] == "superseded"
    assert after["superseded_at"] is not None
    unchanged = {k: v for k, v in after.items() if k not in ("status", "superseded_at")}
    assert unchanged == {k: v for k, v in before.items() if k not in ("status", "superseded_at")}


@pytest.mark.django_db(transaction=True)
def test_database__superseded_back_to_published__refused(history: History) -> None:
    # (a rollback makes a new version instead: history is never rewritten)
    with pytest.raises(DatabaseError, match="is superseded and cannot be changed"):
        execute(
            "UPDATE books_bookversion SET status = 'published', superseded_at = NULL WHERE id = %s",
            history.superseded.pk,
        )
    assert row(history.superseded)["status"] == "superseded"


@pytest.mark.django_db(transaction=True)
def test_database__draft__changed_then_deleted(history: History) -> None:
    assert execute("UPDATE books_bookversion SET objective = 'x' WHERE id = %s", history.draft.pk)
    assert row(history.draft)["objective"] == "x"
    assert execute("DELETE FROM books_bookversion WHERE id = %s", history.draft.pk) == 1
    assert not BookVersion.objects.filter(pk=history.draft.pk).exists()
