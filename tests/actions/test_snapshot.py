"""The gate keeps what it reads of the registry between requests, and never answers from a
registry older than the request: a tool taken away, a key narrowed, a book published are seen
by the next proposal; a change rolled back leaves nothing behind; a second proposal with nothing
changed reads none of it again. Workers read what an action names through the same snapshot."""

from __future__ import annotations

from typing import Any

import pytest
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext

from apps.actions.execution import action_execute
from apps.actions.models import Status
from apps.books.models import BookVersion
from apps.registry.models import Agent, Tool, Workflow
from apps.registry.services import IssuedKey, agent_key_revoke
from tests.actions import tools
from tests.actions.conftest import proposal_body, propose, refund_params
from tests.announced import Announced
from tests.factories import REFUND_CONTROLS, make_published_book

pytestmark = pytest.mark.django_db(transaction=True)


def allowed(client: Client, key: IssuedKey, **changes: Any) -> Any:
    return propose(client, key.key, proposal_body(**changes))


def test_second_proposal__registry_unchanged__reads_none_of_it_again(
    client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    assert allowed(client, key).status_code == 201
    with CaptureQueriesContext(connection) as queries:
        assert allowed(client, key, params=refund_params(order_id="1043")).status_code == 201
    read = " ".join(query["sql"] for query in queries.captured_queries)
    for table in ("registry_agent_tools", "registry_agent_workflows", "books_bookversion"):
        assert table not in read, table


def test_tool_taken_away__the_next_proposal_refused(
    client: Client, key: IssuedKey, book: BookVersion, agent: Agent, refund_tool: Tool,
    enqueued: Announced,
) -> None:  # fmt: skip
    assert allowed(client, key).status_code == 201
    agent.tools.remove(refund_tool)
    answer = allowed(client, key, params=refund_params(order_id="1043"))
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["field"] == "tool"


def test_key_narrowed__the_next_proposal_refused(
    client: Client, key: IssuedKey, book: BookVersion, payments: Workflow, enqueued: Announced
) -> None:
    assert allowed(client, key).status_code == 201
    key.record.workflows.set([payments])
    answer = allowed(client, key, params=refund_params(order_id="1043"))
    assert answer.status_code == 403
    assert answer.json()["errors"][0]["field"] == "workflow"


def test_book_published__the_next_proposal_decided_by_it(
    client: Client, key: IssuedKey, book: BookVersion, refunds: Workflow, risk_user: Any,
    enqueued: Announced,
) -> None:  # fmt: skip
    assert allowed(client, key).json()["book_version"] == 1
    stricter = {
        **REFUND_CONTROLS,
        "tools": [{"tool": "issue_refund", "risk_zone": "yellow", "auto_cap": 1000,
                   "hard_cap": 50000}],
    }  # fmt: skip
    make_published_book(workflow=refunds, author=risk_user, values=stricter, note="stricter")
    answer = allowed(client, key, params=refund_params(order_id="1043")).json()
    assert (answer["book_version"], answer["decision"]) == (2, "hold")


def test_change_rolled_back__leaves_nothing_behind(
    client: Client, key: IssuedKey, book: BookVersion, agent: Agent, refund_tool: Tool,
    enqueued: Announced,
) -> None:  # fmt: skip
    # Given a proposal made inside a transaction that took the tool away, then rolled back
    def refused_then_rolled_back() -> None:
        with transaction.atomic():
            agent.tools.remove(refund_tool)
            assert allowed(client, key).status_code == 403
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        refused_then_rolled_back()
    # Then the next proposal sees the tool again
    assert allowed(client, key, params=refund_params(order_id="1043")).status_code == 201


def test_generation_unknown__nothing_kept_answers_still_right(
    client: Client, key: IssuedKey, book: BookVersion, agent: Agent, refund_tool: Tool,
    enqueued: Announced,
) -> None:  # fmt: skip
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM registry_registrygeneration")
    assert allowed(client, key).status_code == 201
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = replica")  # (the triggers set aside)
        cursor.execute(
            "DELETE FROM registry_agent_tools WHERE agent_id = %s AND tool_id = %s",
            [agent.pk, refund_tool.pk],
        )
        cursor.execute("SET session_replication_role = origin")
    assert allowed(client, key, params=refund_params(order_id="1043")).status_code == 403


def test_key_revoked__the_next_request_refused(
    client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    assert allowed(client, key).status_code == 201
    agent_key_revoke(key_id=key.record.pk, actor="system:test")
    answer = allowed(client, key, params=refund_params(order_id="1043"))
    assert answer.status_code == 401
    assert "revoked" in answer.json()["detail"]


def test_agent_paused__the_next_proposal_refused(
    client: Client, key: IssuedKey, book: BookVersion, agent: Agent, enqueued: Announced
) -> None:
    assert allowed(client, key).status_code == 201
    Agent.objects.filter(pk=agent.pk).update(status=Agent.Status.PAUSED)
    assert allowed(client, key, params=refund_params(order_id="1043")).status_code == 403


def test_key_in_use__its_last_use_stamped_once_not_on_every_request(
    client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    allowed(client, key)
    with CaptureQueriesContext(connection) as queries:
        for number in range(3):
            allowed(client, key, params=refund_params(order_id=f"2{number}"))
    stamps = [q for q in queries.captured_queries if "last_used_at" in q["sql"].split("WHERE")[0]]
    assert [q for q in stamps if q["sql"].startswith("UPDATE")] == []


@pytest.mark.usefixtures("tool_calls")
def test_worker__tool_changed_between_two_runs__the_second_runs_as_it_is_now(
    client: Client,
    key: IssuedKey,
    book: BookVersion,
    in_process_tool: Tool,
    enqueued: Announced,
) -> None:
    # Given a refund run by the tool's in-process refund function
    first = allowed(client, key).json()["id"]
    assert action_execute(action_id=first).status == Status.SUCCEEDED
    assert len(tools.REFUNDS) == 1
    # When the tool is pointed elsewhere, and the next refund runs
    in_process_tool.callable_path = "tests.actions.tools.undo_refund"
    in_process_tool.save()
    second = allowed(client, key, params=refund_params(order_id="1043")).json()["id"]
    assert action_execute(action_id=second).status == Status.SUCCEEDED
    # Then it ran through the tool as it is now, not as the worker last read it
    assert len(tools.REFUNDS) == 1
    assert [call.idempotency_key for call in tools.UNDOS] == [f"esc-{second}"]


@pytest.mark.usefixtures("tool_calls", "in_process_tool")
def test_worker__registry_unchanged__reads_none_of_it_again(
    client: Client, key: IssuedKey, book: BookVersion, enqueued: Announced
) -> None:
    first = allowed(client, key).json()["id"]
    second = allowed(client, key, params=refund_params(order_id="1043")).json()["id"]
    assert action_execute(action_id=first).status == Status.SUCCEEDED
    with CaptureQueriesContext(connection) as queries:
        assert action_execute(action_id=second).status == Status.SUCCEEDED
    read = " ".join(query["sql"] for query in queries.captured_queries)
    for table in (
        '"registry_agent"',
        '"registry_tool"',
        '"registry_workflow"',
        "books_bookversion",
    ):
        assert table not in read, table
    assert len(tools.REFUNDS) == 2
