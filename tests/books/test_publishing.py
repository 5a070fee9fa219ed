"""Publishing and rolling back Decision Books: a change note and the risk role, numbered
versions, one active version at a time (also under concurrent publishes), every step audited."""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

from apps.accounts.roles import Role
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.books.services import (
    CONTENT_FIELDS,
    BookError,
    PublishRefused,
    book_publish,
    book_rollback,
    draft_create,
    draft_update,
)
from apps.registry.models import Workflow
from tests.factories import REFUND_CONTROLS, make_published_book, make_tool, make_workflow


def content(version: BookVersion) -> dict[str, Any]:
    return {name: getattr(version, name) for name in CONTENT_FIELDS}


def fresh(version: BookVersion) -> BookVersion:
    return BookVersion.objects.get(pk=version.pk)


def new_draft(workflow: Workflow, author: User, objective: str) -> BookVersion:
    """A draft of the workflow's next version, differing from the active one by its objective."""
    draft = draft_create(workflow=workflow, user=author)
    values: dict[str, Any] = {**REFUND_CONTROLS, "escalation_owner_id": author.pk}
    return draft_update(version_id=draft.pk, user=author, values={**values, "objective": objective})


def active_versions(workflow: Workflow) -> list[BookVersion]:
    return list(BookVersion.objects.filter(workflow=workflow, status=BookVersion.Status.PUBLISHED))


@pytest.fixture
def author(user_for: Any) -> User:
    make_tool()
    user: User = user_for(Role.RISK)
    return user


@pytest.fixture
def refunds(author: User) -> Workflow:
    return make_workflow()


# --- the rules of publishing ---------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.parametrize("note", ["", "   \n"])
def test_publish__no_change_note__refused_naming_the_field(
    author: User, refunds: Workflow, note: str
) -> None:
    draft = new_draft(refunds, author, "first")
    with pytest.raises(BookError) as caught:
        book_publish(version_id=draft.pk, user=author, change_note=note)
    assert caught.value.field == "change_note"
    assert "change note is required" in caught.value.message
    assert fresh(draft).status == BookVersion.Status.DRAFT
    assert not AuditEvent.objects.filter(verb="book.published").exists()


@pytest.mark.django_db
@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.FINANCE, Role.ONCALL, Role.ADMIN])
def test_publish__without_the_risk_role__refused(
    author: User, refunds: Workflow, user_for: Any, role: Role
) -> None:
    draft = new_draft(refunds, author, "first")
    with pytest.raises(BookError, match=r"^Only the risk role may change Decision Books\.$"):
        book_publish(version_id=draft.pk, user=user_for(role), change_note="first")
    assert fresh(draft).status == BookVersion.Status.DRAFT
    assert not AuditEvent.objects.filter(verb="book.published").exists()


@pytest.mark.django_db
def test_publish__three_times__numbered_1_2_3_each_superseding_the_last(
    author: User, refunds: Workflow
) -> None:
    published = []
    for number in (1, 2, 3):
        # When a new draft is published
        draft = new_draft(refunds, author, f"objective {number}")
        version = book_publish(version_id=draft.pk, user=author, change_note=f"note {number}")
        published.append(version)
        # Then it is the one active version, numbered next, and its predecessor is retired
        assert version.number == number
        assert active_versions(refunds) == [version]
        if number > 1:
            previous = fresh(published[-2])
            assert previous.status == BookVersion.Status.SUPERSEDED
            assert previous.superseded_at == version.published_at
    stored = [fresh(version) for version in published]
    assert [(v.number, v.status, v.objective) for v in stored] == [
        (1, "superseded", "objective 1"),
        (2, "superseded", "objective 2"),
        (3, "published", "objective 3"),
    ]
    assert [v.change_note for v in stored] == ["note 1", "note 2", "note 3"]
    assert all(v.published_by == author for v in stored)


@pytest.mark.django_db
def test_publish__twice_the_same_draft__second_refused(author: User, refunds: Workflow) -> None:
    draft = new_draft(refunds, author, "first")
    book_publish(version_id=draft.pk, user=author, change_note="first")
    with pytest.raises(BookError, match=r"^Version v1 is already published\.$"):
        book_publish(version_id=draft.pk, user=author, change_note="again")
    assert AuditEvent.objects.filter(verb="book.published").count() == 1


@pytest.mark.django_db
def test_publish__audited_with_version_previous_and_note(author: User, refunds: Workflow) -> None:
    first = make_published_book(workflow=refunds, author=author, note="first")
    second = book_publish(
        version_id=new_draft(refunds, author, "second").pk, user=author, change_note="  second "
    )
    events = list(AuditEvent.objects.filter(verb="book.published"))
    assert [(e.target_type, e.target_id, e.actor) for e in events] == [
        ("books.bookversion", str(first.pk), "bob"),
        ("books.bookversion", str(second.pk), "bob"),
    ]
    assert events[1].payload == {
        "workflow": "refunds",
        "version": 2,
        "previous": 1,
        "change_note": "second",
    }


@pytest.mark.django_db
def test_publish__invalid_raw_policy__refused_and_active_version_stays(
    author: User, refunds: Workflow
) -> None:
    # Given an active v1 and a draft whose raw Cedar does not parse
    active = make_published_book(workflow=refunds, author=author)
    draft = draft_create(workflow=refunds, user=author)
    draft_update(
        version_id=draft.pk,
        user=author,
        values={"raw_policies": '@id("oops")\n@message("m")\nforbid(principal, action'},
    )
    events_before = AuditEvent.objects.count()
    # When it is published
    with pytest.raises(PublishRefused) as caught:
        book_publish(version_id=draft.pk, user=author, change_note="broken")
    # Then the problem is named (section and cause) and nothing changed
    assert [(p.section, p.policy_id) for p in caught.value.problems] == [("raw", "oops")]
    assert caught.value.problems[0].message.startswith("Syntax: ")
    assert active_versions(refunds) == [active]
    assert fresh(active).superseded_at is None
    assert (fresh(draft).status, fresh(draft).number) == ("draft", None)
    assert AuditEvent.objects.count() == events_before


# --- rollback ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_rollback__to_v1__new_v3_copies_v1_content_based_on_it(
    author: User, refunds: Workflow
) -> None:
    # Given v1 and v2, which differ
    v1 = make_published_book(workflow=refunds, author=author, note="first")
    v2 = book_publish(
        version_id=new_draft(refunds, author, "second").pk, user=author, change_note="second"
    )
    assert content(fresh(v1)) != content(fresh(v2))
    # When the book is rolled back to v1
    v3 = book_rollback(version_id=v1.pk, user=author, change_note="v2 refunded too much")
    # Then a new v3 with v1's content is active, and v1 and v2 are left as they were
    v3 = fresh(v3)
    assert (v3.number, v3.status, v3.based_on_id) == (3, "published", v1.pk)
    assert content(v3) == content(fresh(v1))
    assert (v3.policy_text, v3.cedar_schema) == (fresh(v1).policy_text, fresh(v1).cedar_schema)
    assert v3.change_note == "v2 refunded too much"
    assert active_versions(refunds) == [v3]
    assert (fresh(v1).status, fresh(v2).status) == ("superseded", "superseded")
    # And the rollback is audited, naming what it restored and what it replaced
    event = AuditEvent.objects.get(verb="book.rolled_back")
    assert (event.target_id, event.actor) == (str(v3.pk), "bob")
    assert event.payload == {
        "workflow": "refunds",
        "version": 3,
        "restores": 1,
        "previous": 2,
        "change_note": "v2 refunded too much",
    }


@pytest.mark.django_db
def test_rollback__no_change_note__refused_naming_the_field(
    author: User, refunds: Workflow
) -> None:
    v1 = make_published_book(workflow=refunds, author=author)
    book_publish(version_id=new_draft(refunds, author, "second").pk, user=author, change_note="2")
    with pytest.raises(BookError) as caught:
        book_rollback(version_id=v1.pk, user=author, change_note=" ")
    assert caught.value.field == "change_note"
    assert BookVersion.objects.count() == 2


@pytest.mark.django_db
def test_rollback__to_the_active_version_or_a_draft__refused(
    author: User, refunds: Workflow
) -> None:
    v1 = make_published_book(workflow=refunds, author=author)
    draft = draft_create(workflow=refunds, user=author)
    with pytest.raises(BookError, match=r"^v1 is already the active version\.$"):
        book_rollback(version_id=v1.pk, user=author, change_note="again")
    with pytest.raises(BookError, match=r"^Only a published version can be rolled back to"):
        book_rollback(version_id=draft.pk, user=author, change_note="draft")
    assert not AuditEvent.objects.filter(verb="book.rolled_back").exists()


@pytest.mark.django_db
def test_rollback__without_the_risk_role__refused(
    author: User, refunds: Workflow, user_for: Any
) -> None:
    v1 = make_published_book(workflow=refunds, author=author)
    book_publish(version_id=new_draft(refunds, author, "second").pk, user=author, change_note="2")
    with pytest.raises(BookError, match=r"^Only the risk role"):
        book_rollback(version_id=v1.pk, user=user_for(Role.ONCALL), change_note="undo")
    assert BookVersion.objects.count() == 2


# --- concurrency ---------------------------------------------------------------------------
# Real threads on real PostgreSQL connections, released together by a barrier. These tests
# commit for real (transaction=True), so each thread sees what the others committed.

THREADS = 8


@dataclass
class Race:
    wins: list[tuple[str, int]] = field(default_factory=list)
    refusals: list[tuple[str, str]] = field(default_factory=list)
    crashes: list[BaseException] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def race(attempts: list[tuple[str, Callable[[User], BookVersion]]], author_pk: int) -> Race:
    """Run each (label, attempt) in its own thread, all starting at once."""
    outcome = Race()
    barrier = threading.Barrier(len(attempts), timeout=30)

    def run(label: str, attempt: Callable[[User], BookVersion]) -> None:
        try:
            user = User.objects.get(pk=author_pk)  # on this thread's own connection
            barrier.wait()
            version = attempt(user)
            with outcome.lock:
                outcome.wins.append((label, version.pk))
        except BookError as exc:
            with outcome.lock:
                outcome.refusals.append((label, exc.message))
        except BaseException as exc:  # noqa: BLE001 (reported by the test, not lost in a thread)
            with outcome.lock:
                outcome.crashes.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run, args=attempt) for attempt in attempts]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a thread is stuck"
    assert not outcome.crashes, outcome.crashes
    return outcome


def assert_one_active_and_distinct_numbers(workflow: Workflow) -> list[BookVersion]:
    versions = list(BookVersion.objects.filter(workflow=workflow).exclude(number=None))
    assert len(active_versions(workflow)) == 1
    numbers = sorted(version.number or 0 for version in versions)
    assert numbers == list(range(1, len(versions) + 1))
    return versions


def publish_attempt(draft_pk: int, note: str) -> Callable[[User], BookVersion]:
    return lambda user: book_publish(version_id=draft_pk, user=user, change_note=note)


def rollback_attempt(target_pk: int, note: str) -> Callable[[User], BookVersion]:
    return lambda user: book_rollback(version_id=target_pk, user=user, change_note=note)


@pytest.fixture
def two_workflows(author: User) -> tuple[Workflow, Workflow]:
    # Given two workflows, each with an active v1 and a draft of v2
    workflows = (make_workflow("refunds"), make_workflow("payments", "Outgoing payments"))
    for workflow in workflows:
        make_published_book(workflow=workflow, author=author, note="first")
        new_draft(workflow, author, f"{workflow.slug} second")
    return workflows


@pytest.mark.django_db(transaction=True)
def test_publish__same_draft_by_8_threads_in_2_workflows__one_wins_each(
    author: User, two_workflows: tuple[Workflow, Workflow]
) -> None:
    drafts = {
        workflow.slug: BookVersion.objects.get(workflow=workflow, status="draft")
        for workflow in two_workflows
    }
    # When 8 threads per workflow publish that workflow's draft at the same moment
    attempts = [
        (slug, publish_attempt(draft.pk, f"thread {i}"))
        for slug, draft in drafts.items()
        for i in range(THREADS)
    ]
    outcome = race(attempts, author.pk)
    # Then in each workflow exactly one publish wins and the other seven are told why
    assert sorted(outcome.wins) == sorted((slug, draft.pk) for slug, draft in drafts.items())
    assert len(outcome.refusals) == 2 * (THREADS - 1)
    assert {message for _, message in outcome.refusals} == {"Version v2 is already published."}
    # And each workflow has one active version, v2, and v1 superseded
    for workflow in two_workflows:
        versions = assert_one_active_and_distinct_numbers(workflow)
        assert {(v.number, v.status) for v in versions} == {(1, "superseded"), (2, "published")}
        assert active_versions(workflow)[0].pk == drafts[workflow.slug].pk
    assert AuditEvent.objects.filter(verb="book.published").count() == 4  # 2 setup + 2 won


@pytest.mark.django_db(transaction=True)
def test_rollback__8_threads_to_different_versions_in_2_workflows__one_active_each(
    author: User, two_workflows: tuple[Workflow, Workflow]
) -> None:
    # Given v1, v2 and an active v3 in each workflow
    targets: dict[str, list[int]] = {}
    for workflow in two_workflows:
        book_publish(
            version_id=BookVersion.objects.get(workflow=workflow, status="draft").pk,
            user=author,
            change_note="second",
        )
        book_publish(
            version_id=new_draft(workflow, author, f"{workflow.slug} third").pk,
            user=author,
            change_note="third",
        )
        targets[workflow.slug] = list(
            BookVersion.objects.filter(workflow=workflow, number__in=[1, 2])
            .order_by("number")
            .values_list("pk", flat=True)
        )
    # When 8 threads per workflow roll back at once, half to v1 and half to v2
    attempts = [
        (slug, rollback_attempt(pks[i % 2], f"thread {i}"))
        for slug, pks in targets.items()
        for i in range(THREADS)
    ]
    outcome = race(attempts, author.pk)
    # Then every rollback lands, one after the other, as a new version of its own
    assert not outcome.refusals
    assert len(outcome.wins) == 2 * THREADS
    for workflow in two_workflows:
        versions = assert_one_active_and_distinct_numbers(workflow)
        assert len(versions) == 3 + THREADS
        restored = [v for v in versions if (v.number or 0) > 3]
        assert sorted(v.based_on_id or 0 for v in restored) == sorted(
            targets[workflow.slug] * (THREADS // 2)
        )
        # And the active one is the last to land, with the content of the version it restores
        active = active_versions(workflow)[0]
        assert active.number == 3 + THREADS
        assert active.based_on is not None
        source = active.based_on
        assert content(active) == content(source)
    assert AuditEvent.objects.filter(verb="book.rolled_back").count() == 2 * THREADS


@pytest.mark.django_db(transaction=True)
def test_publish_and_rollback__racing_in_one_workflow__one_active_version(
    author: User, two_workflows: tuple[Workflow, Workflow]
) -> None:
    # Given an active v2, the superseded v1 to roll back to, and a draft of the next version
    refunds = two_workflows[0]
    draft = BookVersion.objects.get(workflow=refunds, status="draft")
    book_publish(version_id=draft.pk, user=author, change_note="second")
    v1 = BookVersion.objects.get(workflow=refunds, number=1)
    next_draft = new_draft(refunds, author, "third")
    # When 4 threads publish the draft while 4 roll back to v1
    attempts = [("publish", publish_attempt(next_draft.pk, f"p{i}")) for i in range(4)]
    attempts += [("rollback", rollback_attempt(v1.pk, f"r{i}")) for i in range(4)]
    outcome = race(attempts, author.pk)
    # Then the draft is published once, every rollback lands, and one version is active
    assert [label for label, _ in outcome.wins].count("publish") == 1
    assert [label for label, _ in outcome.wins].count("rollback") == 4
    assert [label for label, _ in outcome.refusals] == ["publish"] * 3
    versions = assert_one_active_and_distinct_numbers(refunds)
    assert len(versions) == 2 + 1 + 4
