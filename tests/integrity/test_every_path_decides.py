"""Every path that can lead to a tool call asks the Decision Book, on the params that run.

Two halves. The map: every place in the product's code that creates an action, makes one
approved or queued, records the digest of decided params or hands an action to a worker is
found by reading the code, and must be one of the places listed here, each with the reason it
is safe (a new path fails this test until it is listed, and it is listed only with a test
below). The proof: each listed path is driven for real and the book's decision function is seen
deciding exactly the params that the action then carries, and a worker runs nothing else."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.actions import decision
from apps.actions.execution import _escalate_failure, action_execute
from apps.actions.gate import action_propose
from apps.actions.models import Action, Status
from apps.actions.states import transition
from apps.books.models import BookVersion
from apps.books.policy.engine import ActionFacts
from apps.registry.models import Agent, Tool
from apps.registry.services import IssuedKey
from apps.reviews.models import ReviewItem, Verdict
from apps.reviews.services import DecisionInput, review_decide
from tests.actions import tools
from tests.actions.conftest import proposal, proposal_body, propose, refund_params

ROOT = Path(__file__).resolve().parents[2]

# Where the code creates, approves, queues or sends actions, and why each place is safe.
KNOWN_PATHS: dict[str, str] = {
    "apps/actions/gate.py:_record": "the gate: queues only what action_rule allowed",
    "apps/actions/gate.py:_new_action": "the gate: an action in proposed, denied until ruled",
    "apps/actions/gate.py:_allow_path": "the gate's allow path: writes only what action_rule "
    "allowed, through action_insert_unless_stopped",
    "apps/actions/allow_path.py:action_insert_unless_stopped": "the one INSERT of an action "
    "written in SQL; its one caller is the gate's _allow_path",
    "apps/actions/enqueue.py:action_enqueue": "approval: takes a Ruling of the action's own params",
    "apps/actions/enqueue.py:action_retry": "a fallback run again: takes a Ruling of its params",
    "apps/actions/dispatch.py:action_send": "the one sender of actions queued by the above; "
    "the requeue sweep and a switch's release send through it, and the worker checks",
    "apps/reviews/services.py:_apply": "approval: asks action_rule first (review_decide)",
}

# The operations that make an action run, as they appear in the code.
QUEUE_STATES = {"QUEUED", "APPROVED"}


def _is_queue_state(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Attribute)
        and node.attr in QUEUE_STATES
        and isinstance(node.value, ast.Name)
        and node.value.id == "Status"
    )


def _makes_run(call: ast.Call) -> str:
    """What this call does towards running an action, or ""."""
    func = call.func
    name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
    owner = func.value if isinstance(func, ast.Attribute) else None
    if name in ("delay", "apply_async", "s", "si", "signature") and (
        isinstance(owner, ast.Name) and owner.id == "execute_action"
    ):
        return "sends to a worker"
    if name == "send_task":
        return "sends to a worker"
    if name in ("task_send", "task_send_on_commit") and call.args:
        task = call.args[0]
        if (isinstance(task, ast.Name) and task.id == "EXECUTE") or (
            isinstance(task, ast.Constant) and task.value == "actions.execute"
        ):
            return "sends to a worker"
    steps = [
        step
        for arg in call.args
        for step in (arg.elts if isinstance(arg, ast.Tuple | ast.List) else [arg])
    ]
    if name == "action_insert_unless_stopped":
        # (writes whatever path it is given: every caller is a path of its own)
        return "moves to approved or queued"
    if name in ("transition", "transition_insert", "_enter") and any(
        _is_queue_state(step) for step in steps
    ):
        return "moves to approved or queued"
    writes = name in ("Action", "update", "create", "get_or_create", "update_or_create")
    for keyword in call.keywords:
        if writes and keyword.arg == "status" and _is_queue_state(keyword.value):
            return "writes an approved or queued status"
        if keyword.arg == "params_digest" and name in ("Action", "update", "transition"):
            return "records decided params"
    if name == "Action" or (
        name in ("create", "bulk_create", "get_or_create", "update_or_create")
        and isinstance(owner, ast.Attribute)
        and owner.attr == "objects"
        and isinstance(owner.value, ast.Name)
        and owner.value.id == "Action"
    ):
        return "creates an action"
    return ""


def _text_of(node: ast.AST) -> str | None:
    """The text of a string written into the code: a constant, an f-string (its fields as
    written) or constants joined by +; None for anything else."""
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.JoinedStr):
        return "".join(
            str(part.value) if isinstance(part, ast.Constant) else ast.unparse(part)
            for part in node.values
        )
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        left, right = _text_of(node.left), _text_of(node.right)
        if left is not None and right is not None:
            return left + right
    return None


# INSERT INTO or UPDATE of the actions table, however it is named: quoted, with its schema, or
# through the model's db_table.
_SQL_WRITE = re.compile(
    r"\b(insert\s+into|update)\s+(\w+\.)?(actions_action|\{?action\._meta\.db_table\}?)\b"
)


def _writes_in_sql(node: ast.AST) -> str:
    """What a string written into the code does to actions in SQL, or ""."""
    text = _text_of(node)
    if text is None:
        return ""
    found = _SQL_WRITE.search(" ".join(text.replace('"', "").split()).lower())
    if found is None:
        return ""
    return "creates an action in SQL" if found.group(1) != "update" else "updates actions in SQL"


def _paths_in(source: Path, root: Path) -> Iterator[tuple[str, str]]:
    tree = ast.parse(source.read_text(), filename=str(source))
    relative = source.relative_to(root).as_posix()

    def visit(node: ast.AST, where: str) -> Iterator[tuple[str, str]]:
        for child in ast.iter_child_nodes(node):
            inner = where
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef) and where == "":
                inner = child.name
            what = _makes_run(child) if isinstance(child, ast.Call) else _writes_in_sql(child)
            if what and isinstance(child, ast.BinOp | ast.JoinedStr):
                yield f"{relative}:{inner or '<module>'}", what
                continue  # (its parts are one string: not found again)
            if what:
                yield f"{relative}:{inner or '<module>'}", what
            yield from visit(child, inner)

    yield from visit(tree, "")


def queue_paths(root: Path = ROOT) -> dict[str, set[str]]:
    """{"file:function": {what it does}} for every place in `root`/apps that can make an action
    run (migrations aside: they run once, before the product does)."""
    found: dict[str, set[str]] = {}
    for source in sorted((root / "apps").rglob("*.py")):
        if "migrations" in source.parts:
            continue
        for place, what in _paths_in(source, root):
            found.setdefault(place, set()).add(what)
    return found


def test_map__every_place_that_can_make_an_action_run__is_known() -> None:
    # Given the product's code
    # When every place that creates, approves, queues or sends an action is found
    found = queue_paths()
    # Then each is one of the known paths, each proven below to run only decided params
    unknown = {place: sorted(what) for place, what in found.items() if place not in KNOWN_PATHS}
    assert unknown == {}, (
        "a new way to make an action run: make it ask apps.actions.decision.action_rule on "
        "the params that run, prove it in this file, then list it in KNOWN_PATHS"
    )
    assert set(KNOWN_PATHS) <= set(found), "a known path is gone: remove it from KNOWN_PATHS"


@pytest.mark.parametrize(
    ("body", "what"),
    [
        (
            "Action.objects.filter(pk=pk).update(status=Status.QUEUED)",
            "writes an approved or queued status",
        ),
        ("transition(action, Status.APPROVED, actor=user)", "moves to approved or queued"),
        ("execute_action.delay(str(pk))", "sends to a worker"),
        ("Action.objects.create(status=Status.PROPOSED)", "creates an action"),
        (
            'cursor.execute(f"INSERT INTO actions_action ({c}) VALUES (%s)")',
            "creates an action in SQL",
        ),
        ('cursor.execute("UPDATE  actions_action SET status = %s")', "updates actions in SQL"),
        (
            "cursor.execute('INSERT INTO \"actions_action\" (id) VALUES (%s)')",
            "creates an action in SQL",
        ),
        (
            "cursor.execute('update public.actions_action set status = %s')",
            "updates actions in SQL",
        ),
        (
            'cursor.execute(f"INSERT INTO {Action._meta.db_table} (id) VALUES (%s)")',
            "creates an action in SQL",
        ),
        (
            'cursor.execute("INSERT INTO " + "actions_action (id) VALUES (%s)")',
            "creates an action in SQL",
        ),
        ("action_insert_unless_stopped(action, PATH, actor=user)", "moves to approved or queued"),
        (
            "action_insert_unless_stopped(action, (Status.APPROVED, Status.QUEUED))",
            "moves to approved or queued",
        ),
    ],
)
def test_map__finds_a_new_side_door(tmp_path: Path, body: str, what: str) -> None:
    # Given a module that makes an action run without asking the book
    module = tmp_path / "apps" / "actions" / "side_door.py"
    module.parent.mkdir(parents=True)
    module.write_text(f"def sneak(action, pk, user):\n    {body}\n")
    # When the code is mapped
    found = queue_paths(tmp_path)
    # Then the side door is found
    assert found == {"apps/actions/side_door.py:sneak": {what}}


# -- The proof: each path decides the params that run -----------------------------------------


@pytest.fixture
def decided(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """The params the book's decision function was asked about, in order."""
    seen: list[dict[str, Any]] = []
    real: Callable[[BookVersion, ActionFacts], Any] = decision.book_decide  # type: ignore[attr-defined]

    def spy(version: BookVersion, facts: ActionFacts) -> Any:
        seen.append(dict(facts.params))
        return real(version, facts)

    monkeypatch.setattr(decision, "book_decide", spy)
    return seen


def run(action: Action) -> None:
    """Execute a queued action in this process, as a worker would."""
    assert action_execute(action_id=action.pk).status == Status.SUCCEEDED


def test_gate__allowed_proposal__runs_the_params_the_book_decided(
    book: BookVersion, key: IssuedKey, client: Client, in_process: Tool, decided: list[Any]
) -> None:
    # Given an agent proposing 30.00 EUR as a float through the API
    body = proposal_body(params=refund_params(amount_cents=3000.0))
    # When the gate allows it and a worker runs it
    response = propose(client, key.key, body)
    action = Action.objects.get(pk=response.json()["id"])
    run(action)
    # Then the book decided exactly what was stored and sent
    assert decided == [action.params] == [call.params for call in tools.REFUNDS]


def test_review__approve_and_edit_approve__decided_on_the_params_that_run(
    book: BookVersion, key: IssuedKey, alice: User, in_process: Tool, decided: list[Any]
) -> None:
    # Given two held refunds of 300.00 EUR
    first = action_propose(
        key=key.record, proposal=proposal(params=refund_params(amount_cents=30_000))
    ).action
    held = proposal(params=refund_params(amount_cents=31_000), subject="order:7")
    second = action_propose(key=key.record, proposal=held).action
    decided.clear()
    # When one is approved and the other edited to 45.00 EUR and approved, and both run
    approve = DecisionInput(verdict=Verdict.APPROVE, reason_code="verified")
    edit = DecisionInput(
        verdict=Verdict.EDIT_APPROVE, reason_code="verified",
        params=refund_params(amount_cents=4500.0),
    )  # fmt: skip
    review_decide(item_id=ReviewItem.objects.get(action=first).pk, user=alice, given=approve)
    review_decide(item_id=ReviewItem.objects.get(action=second).pk, user=alice, given=edit)
    run(first)
    run(second)
    # Then the book decided exactly the params each ran with
    ran = [call.params for call in tools.REFUNDS]
    assert decided == ran == [refund_params(amount_cents=30_000), refund_params(amount_cents=4500)]


def test_review__fallback_run_again__decided_on_the_params_that_run(
    book: BookVersion, key: IssuedKey, alice: User, in_process: Tool, decided: list[Any]
) -> None:
    # Given a refund that failed and became a fallback item
    action = action_propose(key=key.record, proposal=proposal()).action
    transition(action, Status.RUNNING, actor="system:worker")
    _escalate_failure(action, "timed out")
    decided.clear()
    # When a person runs it again with 20.00 EUR
    item = ReviewItem.objects.get(action=action, kind="fallback")
    edit = DecisionInput(
        verdict=Verdict.EDIT_APPROVE, reason_code="verified",
        params=refund_params(amount_cents=2_000),
    )  # fmt: skip
    retry = review_decide(item_id=item.pk, user=alice, given=edit).queued
    assert retry is not None
    run(retry)
    # Then the book decided the params the retry ran with
    assert decided == [call.params for call in tools.REFUNDS] == [refund_params(amount_cents=2_000)]


def test_worker__action_queued_by_a_side_door__runs_nothing(
    book: BookVersion, key: IssuedKey, agent: Agent, in_process: Tool
) -> None:
    # Given an action written as queued straight into the database, never decided
    action = Action.objects.create(
        agent=agent, workflow=book.workflow, tool=in_process, book_version=book,
        status=Status.QUEUED, decision="allow", params=refund_params(),
        confidence=Decimal("0.9"),
    )  # fmt: skip
    # When a worker (the requeue sweep, a released switch) sends it on
    outcome = action_execute(action_id=action.pk)
    # Then the tool is never called
    assert outcome.status == Status.FAILED
    assert tools.REFUNDS == []


def test_runtime__hosted_steps_propose_through_the_gate() -> None:
    # Given the hosted agent runtime
    found = queue_paths()
    # Then it makes no action run on its own: its steps propose through action_propose
    assert not [place for place in found if place.startswith("apps/runtime/")]
    steps = (ROOT / "apps" / "runtime" / "steps.py").read_text()
    assert "action_propose(key=self._key, proposal=proposal)" in steps
