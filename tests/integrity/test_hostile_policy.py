"""Hostile Cedar policy text is refused with an error naming the limit it breaks, before any of
it reaches cedarpy: in the draft editor (validate, try it, publish) and when a stored version is
loaded to decide an action. Without the limits, cedarpy kills the process (800 nested
parentheses: SIGSEGV) or the request fails (long chains: RecursionError, a 500).

The last tests run a real web process and a real Celery worker: both must still be up and
answering after the hostile inputs reached them."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import cedarpy
import pytest
import urllib3
from django.contrib.auth.models import User
from django.db.models import Max
from django.test import Client
from django.utils import timezone

from apps.accounts.roles import Role
from apps.actions.gate import action_propose
from apps.books.compilation import book_compile
from apps.books.content import ToolRule
from apps.books.models import BookVersion
from apps.books.policy import engine, limits
from apps.books.policy.compiler import Controls, compile_controls
from apps.books.policy.engine import CompiledPolicies, decide
from apps.books.policy.schema import ToolParams, build_schema, param_types
from apps.books.policy.source import split_statements
from apps.books.policy.validation import validate_policies
from apps.books.services import draft_create, draft_update
from apps.demo.world import WORKFLOWS
from apps.ledger.backtest import backtest_request
from apps.ledger.models import Backtest
from apps.registry.models import Agent, Workflow
from apps.registry.services import IssuedKey
from controlplane.celery import app as celery_app
from tests.actions.conftest import proposal, proposal_body, propose, refund_params
from tests.books.test_views import form_data
from tests.conftest import ROOT, database_url_for_subprocess
from tests.execution.conftest import (  # noqa: F401 (own_queue is a fixture)
    own_queue,
    worker_start,
    worker_stop,
)
from tests.factories import REFUND_CONTROLS, REFUND_SCHEMA, refund_facts
from tests.faults.conftest import free_port

NESTING = limits.MAX_NESTING_DEPTH
OPERATORS = limits.MAX_OPERATORS_PER_POLICY
EXPRESSION = limits.MAX_EXPRESSION_DEPTH
SCHEMA = build_schema(param_types([ToolParams("issue_refund", REFUND_SCHEMA)]))
PARAM_TYPES = param_types([ToolParams("issue_refund", REFUND_SCHEMA)])


def raw_policy(condition: str, policy_id: str = "hostile") -> str:
    return (
        f'@id("{policy_id}")\n@message("Hostile")\n'
        f"forbid (principal, action, resource)\nwhen {{ {condition} }};\n"
    )


def chain(terms: int, operator: str) -> str:
    operand = "true" if operator == "&&" else "false"
    return f" {operator} ".join([operand] * terms)


# The inputs reported to crash the product, and what the limits say of each. Each policy starts
# on line 1 and its condition is on line 4; the braces of `when { }` are one level of nesting.
DEEP_PARENS = raw_policy("(" * 800 + "true" + ")" * 800)
LONG_AND = raw_policy(chain(20_000, "&&"))
TRY_CHAIN = raw_policy(chain(2_000, "&&"))
LONG_OR = raw_policy(chain(900, "||"))
# Within the text limits, but its parsed form is deeper than the engine can slice.
DEEP_CHAIN = raw_policy(chain(EXPRESSION + 12, "&&"))

DEEP_PARENS_CAUSE = f"nesting depth 801 is over the limit of {NESTING}"
LONG_AND_CAUSE = f"19,999 operators in one policy is over the limit of {OPERATORS}"
TRY_CHAIN_CAUSE = f"1,999 operators in one policy is over the limit of {OPERATORS}"
LONG_OR_CAUSE = f"899 operators in one policy is over the limit of {OPERATORS}"
DEEP_CHAIN_CAUSE = f"expression depth {EXPRESSION + 12} is over the limit of {EXPRESSION}"


def as_problem(cause: str) -> str:
    """A limit's cause as the draft editor words it (a sentence)."""
    return cause[:1].upper() + cause[1:]


@pytest.fixture
def cedarpy_inputs(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every policy text handed to cedarpy's parsing functions while the test runs."""
    seen: list[str] = []
    for owner, name in (
        (cedarpy.PolicySet, "from_str"),
        (cedarpy, "policies_to_json_str"),
        (cedarpy, "validate_policies"),
    ):
        original = getattr(owner, name)

        def spy(text: str, *args: Any, _original: Callable[..., Any] = original) -> Any:
            seen.append(text)
            return _original(text, *args)

        monkeypatch.setattr(owner, name, spy)
    return seen


# ---------------------------------------------------------------------------------------------
# The limits themselves
# ---------------------------------------------------------------------------------------------


def demo_texts() -> dict[str, str]:
    texts = {}
    for workflow in WORKFLOWS:
        book = workflow["book"]
        start, end = book.get("business_hours_start"), book.get("business_hours_end")
        controls = Controls(
            tools=[ToolRule.model_validate(rule) for rule in book.get("tools", [])],
            confidence_threshold=book.get("confidence_threshold"),
            allowed_segments=book.get("allowed_segments", []),
            business_hours=(start, end) if start is not None and end is not None else None,
            weekdays_only=book.get("weekdays_only", False),
            currency=book.get("currency", "EUR"),
        )
        texts[workflow["slug"]] = compile_controls(controls) + book.get("raw_policies", "")
    return texts


@pytest.mark.parametrize("slug", [workflow["slug"] for workflow in WORKFLOWS])
def test_limits__demo_books__far_inside_every_limit(slug: str) -> None:
    # Given a demo book's controls and raw policies
    text = demo_texts()[slug]
    # When they are measured
    problems = limits.text_problems(text)
    document = json.loads(cedarpy.policies_to_json_str(text))
    depths = [limits.expression_depth(p) for p in document["staticPolicies"].values()]
    # Then nothing is over a limit, and the deepest condition uses a fraction of its limit
    assert problems == []
    assert max(depths) <= EXPRESSION // 4


def test_text_problems__brackets_and_operators_in_strings_and_comments__not_counted() -> None:
    # Given a policy whose message and comments are full of brackets, operators and quotes
    noise = '(((( && || [[[[ {{{{ \\" ; ' * 200
    text = (
        f"// {noise}\n"
        f'@id("noisy")\n@message("{noise}")\n'
        "forbid (principal, action, resource)\n"
        f'when {{ context.segment == "{noise}" }}; // {noise}\n'
    )
    # When its limits are checked
    problems = limits.text_problems(text)
    # Then only the Cedar itself counts
    assert problems == []
    assert len(split_statements(text)) == 1


TOO_LARGE = raw_policy('"' + "x" * limits.MAX_POLICY_CHARS + '" == "x"')


@pytest.mark.parametrize(
    ("text", "line", "cause"),
    [
        pytest.param(DEEP_PARENS, 4, DEEP_PARENS_CAUSE, id="800-nested-parentheses"),
        pytest.param(LONG_OR, 1, LONG_OR_CAUSE, id="900-term-or-chain"),
        pytest.param(
            raw_policy("[" * 30 + "1" + "]" * 30 + " == [1]"),
            4,
            f"nesting depth 31 is over the limit of {NESTING}",
            id="30-nested-sets",
        ),
        pytest.param(
            raw_policy("true") + "\n\n\n" + raw_policy("if true then " * 120 + "1 else 0" * 120),
            8,
            f"120 operators in one policy is over the limit of {OPERATORS}",
            id="second-policy-nested-ifs",
        ),
        pytest.param(
            TOO_LARGE,
            1,
            f"the policies are {len(TOO_LARGE):,} characters long, over the limit of "
            f"{limits.MAX_POLICY_CHARS:,}",
            id="too-large",
        ),
    ],
)
def test_text_problems__over_a_limit__line_measure_and_limit_named(
    text: str, line: int, cause: str
) -> None:
    # When text over a limit is checked
    problems = limits.text_problems(text)
    # Then the one problem names the line, the measured value and the limit
    assert [(problem.line, problem.message[: len(cause)]) for problem in problems] == [
        (line, cause)
    ]


# ---------------------------------------------------------------------------------------------
# Validation: problems with a line and a cause, and cedarpy never sees the text
# ---------------------------------------------------------------------------------------------

CONTROLS = compile_controls(Controls(tools=[ToolRule(tool="issue_refund", auto_cap=5000)]))


@pytest.mark.parametrize(
    ("raw", "line", "cause"),
    [
        pytest.param(DEEP_PARENS, 4, DEEP_PARENS_CAUSE, id="800-nested-parentheses"),
        pytest.param(LONG_AND, 1, LONG_AND_CAUSE, id="20000-term-and-chain"),
        pytest.param(TRY_CHAIN, 1, TRY_CHAIN_CAUSE, id="2000-term-and-chain"),
        pytest.param(LONG_OR, 1, LONG_OR_CAUSE, id="900-term-or-chain"),
    ],
)
def test_validate_policies__text_over_a_limit__problem_at_its_line_and_never_parsed(
    raw: str, line: int, cause: str, cedarpy_inputs: list[str]
) -> None:
    # Given raw Cedar over a limit, after a valid policy and a blank line
    preamble = raw_policy("context.amount > 1", "fine") + "\n"
    # When the book's policies are validated
    problems = validate_policies(CONTROLS, preamble + raw, SCHEMA)
    # Then the one problem is the limit, at the hostile policy's line, by its @id
    assert [(p.section, p.line, p.policy_id) for p in problems] == [("raw", line + 5, "hostile")]
    assert problems[0].message.startswith(as_problem(cause))
    # ... and the hostile text never reached cedarpy
    assert not any("hostile" in text for text in cedarpy_inputs)


def test_validate_policies__chain_too_deep_once_parsed__problem_names_expression_depth() -> None:
    # Given a chain within the text limits whose parsed form is deeper than the engine slices
    # When it is validated
    problems = validate_policies(CONTROLS, DEEP_CHAIN, SCHEMA)
    # Then publishing it is refused, naming the expression depth and its limit
    assert [(p.section, p.line, p.policy_id) for p in problems] == [("raw", 1, "hostile")]
    assert problems[0].message.startswith(as_problem(DEEP_CHAIN_CAUSE))


def test_validate_policies__controls_and_raw_too_large__one_problem_naming_the_size() -> None:
    # Given raw Cedar that makes the book's policies larger than the limit
    # When it is validated
    problems = validate_policies(CONTROLS, TOO_LARGE, SCHEMA)
    # Then the size is the one problem, with both figures
    total = len(CONTROLS) + len(TOO_LARGE)
    assert [(p.section, p.line) for p in problems] == [("raw", 1)]
    assert problems[0].message == (
        f"The policies are {total:,} characters long, over the limit of "
        f"{limits.MAX_POLICY_CHARS:,} (controls and raw together)"
    )


# ---------------------------------------------------------------------------------------------
# The draft editor, through the test client
# ---------------------------------------------------------------------------------------------


@pytest.fixture
def draft(book: BookVersion, agent: Agent, risk_user: User) -> BookVersion:
    """An open draft of the refunds book (v1 active), refund-bot serving the workflow."""
    return draft_create(workflow=book.workflow, user=risk_user)


def try_data(draft: BookVersion, raw: str) -> dict[str, Any]:
    return form_data(
        draft,
        raw_policies=raw,
        **{
            "try-agent": "refund-bot",
            "try-tool": "issue_refund",
            "try-params": json.dumps(proposal_body()["params"]),
            "try-confidence": "0.9",
        },
    )


@pytest.mark.parametrize(
    ("raw", "cause"),
    [
        pytest.param(DEEP_PARENS, DEEP_PARENS_CAUSE, id="800-nested-parentheses"),
        pytest.param(LONG_OR, LONG_OR_CAUSE, id="900-term-or-chain"),
    ],
)
def test_validate_button__hostile_raw_cedar__problem_names_the_limit(
    client_for: Any, draft: BookVersion, raw: str, cause: str
) -> None:
    # Given a risk user's draft with hostile raw Cedar in the form
    # When they press Validate
    response = client_for(Role.RISK).post(
        "/books/refunds/draft/validate/", form_data(draft, raw_policies=raw)
    )
    # Then the problem names the limit, next to the policy's line
    assert response.status_code == 200
    [problem] = response.context["problems"]
    assert (problem.section, problem.policy_id) == ("raw", "hostile")
    assert problem.message.startswith(as_problem(cause))
    assert as_problem(cause) in response.content.decode()


def test_try_it__2000_term_chain__problems_shown_and_nothing_decided(
    client_for: Any, draft: BookVersion
) -> None:
    # Given a draft with a 2,000-term chain in its raw Cedar
    # When a sample action is tried against it
    response = client_for(Role.RISK).post("/books/refunds/draft/try/", try_data(draft, TRY_CHAIN))
    # Then the answer shows the limit, and no decision
    assert response.status_code == 200
    assert response.context["outcome"] is None
    html = response.content.decode()
    assert 'data-testid="try-problems"' in html
    assert as_problem(TRY_CHAIN_CAUSE) in html


def test_publish__20000_term_chain__refused_naming_the_limit_and_active_unchanged(
    client_for: Any, draft: BookVersion
) -> None:
    # Given a draft whose raw Cedar is a 20,000-term chain
    data = form_data(draft, raw_policies=LONG_AND, publish="1", change_note="chain")
    # When it is published
    response = client_for(Role.RISK).post("/books/refunds/draft/", data)
    # Then publishing is refused with the limit, and version 1 stays active
    assert response.status_code == 422
    [problem] = response.context["problems"]
    assert problem.message.startswith(as_problem(LONG_AND_CAUSE))
    active = BookVersion.objects.get(workflow__slug="refunds", status="published")
    assert active.number == 1


# ---------------------------------------------------------------------------------------------
# A stored version over the limits (published before they existed)
# ---------------------------------------------------------------------------------------------


def store_published(*, workflow: Workflow, author: User, raw: str) -> BookVersion:
    """A version of the refund controls with `raw` as its raw Cedar, made active by writing the
    database directly, as a version published before the limits existed would be."""
    draft = draft_create(workflow=workflow, user=author)
    values = {**REFUND_CONTROLS, "escalation_owner_id": author.pk, "raw_policies": raw}
    draft = draft_update(version_id=draft.pk, user=author, values=values)
    text, schema = book_compile(draft)
    now = timezone.now()
    BookVersion.objects.filter(workflow=workflow, status="published").update(
        status="superseded", superseded_at=now
    )
    last = BookVersion.objects.filter(workflow=workflow).aggregate(Max("number"))["number__max"]
    BookVersion.objects.filter(pk=draft.pk).update(
        status="published",
        number=(last or 0) + 1,
        policy_text=text,
        cedar_schema=schema,
        published_by=author,
        published_at=now,
        change_note="published before the limits",
    )
    return BookVersion.objects.get(pk=draft.pk)


@pytest.mark.parametrize(
    ("raw", "cause"),
    [
        pytest.param(DEEP_PARENS, DEEP_PARENS_CAUSE, id="800-nested-parentheses"),
        pytest.param(LONG_AND, LONG_AND_CAUSE, id="20000-term-and-chain"),
        pytest.param(LONG_OR, LONG_OR_CAUSE, id="900-term-or-chain"),
        pytest.param(DEEP_CHAIN, DEEP_CHAIN_CAUSE, id="chain-too-deep-once-parsed"),
    ],
)
def test_proposal__stored_version_over_the_limits__denied_as_not_evaluated_naming_the_limit(
    client: Client,
    key: IssuedKey,
    payments: Workflow,
    risk_user: User,
    raw: str,
    cause: str,
) -> None:
    # Given the payments workflow whose active version holds hostile raw Cedar
    store_published(workflow=payments, author=risk_user, raw=raw)
    # When refund-bot proposes a refund in that workflow
    response = propose(client, key.key, proposal_body(workflow="payments"))
    # Then the action is recorded and denied: the policies could not evaluate it, and why
    assert response.status_code == 201, response.content
    body = response.json()
    assert body["decision"] == "deny"
    [reason] = body["reasons"]
    assert reason["policy"] == engine.NOT_EVALUATED_ID
    assert reason["message"].startswith("The policies could not evaluate this action: ")
    assert cause in reason["message"]


def test_compiled_policies__text_over_the_limits__refused_without_cedarpy(
    cedarpy_inputs: list[str],
) -> None:
    # Given a stored policy text with 800 nested parentheses
    text = CONTROLS + DEEP_PARENS
    # When it is loaded and asked about an action
    compiled = CompiledPolicies(text, PARAM_TYPES)
    verdict = decide(compiled, refund_facts())
    # Then nothing reached cedarpy, and the verdict is a deny naming the line and the limit
    assert cedarpy_inputs == []
    assert verdict.outcome == "deny"
    line = CONTROLS.count("\n") + 4
    assert verdict.errors == (
        f"the policy text is over the limits at line {line}: {DEEP_PARENS_CAUSE}",
    )


# ---------------------------------------------------------------------------------------------
# Real processes
# ---------------------------------------------------------------------------------------------

# Text at every limit at once (nesting, operators, expression depth), parsed, validated and
# decided by both evaluators in a thread with a 512 KiB stack, a quarter of the smallest default
# seen on Linux; cedarpy dies of 40 nested brackets alone in such a thread.
AT_THE_LIMITS = """
import threading
from datetime import UTC, datetime

from apps.books.policy import engine, limits
from apps.books.policy.schema import build_schema
from apps.books.policy.validation import validate_policies

IFS = 48
BRACKETS = limits.MAX_NESTING_DEPTH - 1  # inside the braces of `when { }`
SUBTRACTIONS = limits.MAX_OPERATORS_PER_POLICY - IFS - 2  # and one `&&`, one `.contains`
condition = (
    "(" * BRACKETS + "if true then " * IFS + "true" + " else false" * IFS + ")" * BRACKETS
    + " && [" + ", ".join(["1 - 1"] * SUBTRACTIONS) + "].contains(0)"
)
text = (
    '@id("at-the-limits")\\n@message("m")\\nforbid (principal, action, resource)\\n'
    "when { " + condition + " };\\n"
)
facts = engine.ActionFacts(
    agent="refund-bot", agent_risk_tier="low", agent_workflows=("refunds",),
    tool="issue_refund", tool_zone="green", tool_reversible=True, workflow="refunds",
    at=datetime(2025, 3, 5, 10, tzinfo=UTC),
)
answers = []


def run():
    answers.append(limits.text_problems(text))
    answers.append(validate_policies("", text, build_schema({})))
    for native in (True, False):
        engine.USE_NATIVE = native
        compiled = engine.CompiledPolicies(text, {})
        answers.append(compiled.refusal)
        for _ in range(2):  # the second question runs the evaluator's generated code
            verdict = engine.decide(compiled, facts)
            answers.append((verdict.outcome, verdict.reasons[0].policy_id))


threading.stack_size(512 * 1024)
thread = threading.Thread(target=run)
thread.start()
thread.join()
print(repr(answers))
"""


def test_limits__text_at_every_limit__parsed_validated_and_decided_in_a_512k_thread() -> None:
    # Given text at every limit at once, in a process of its own
    # When it is checked, validated and decided in a thread with a 512 KiB stack
    done = subprocess.run(
        [sys.executable, "-c", AT_THE_LIMITS],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    # Then the process lives, nothing is over a limit, and both evaluators decide it
    assert done.returncode == 0, done.stderr[-2000:]
    denied = ("deny", "at-the-limits")
    assert done.stdout.strip() == repr([[], [], "", denied, denied, "", denied, denied])


CSRF_SECRET = "HostilePolicyCsrfSecret012345678"


@dataclass(frozen=True)
class WebServer:
    process: subprocess.Popen[bytes]
    url: str
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text() if self.log_path.exists() else ""

    def answers(self) -> bool:
        try:
            page = urllib3.request("GET", f"{self.url}/accounts/login/", timeout=30, retries=False)
        except urllib3.exceptions.HTTPError:
            return False
        return page.status == 200


@pytest.fixture
def web_server(transactional_db: Any) -> Iterator[WebServer]:
    """`manage.py runserver --noreload` on the test database: one process serving each request
    in a thread of its own, so a request that crashes it ends it (a gunicorn master would start
    another worker and hide the crash). Tasks go to a queue nobody reads."""
    port = free_port()
    log_path = ROOT / "var" / f"web-hostile-{uuid.uuid4().hex[:8]}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {
        **os.environ,
        "DATABASE_URL": database_url_for_subprocess(),
        "CELERY_QUEUE": f"test-unread-{uuid.uuid4().hex[:8]}",
        "LOG_FORMAT": "text",
    }
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "manage.py", "runserver", f"127.0.0.1:{port}", "--noreload"],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
    server = WebServer(process, f"http://127.0.0.1:{port}", log_path)
    try:
        deadline = time.monotonic() + 60
        while not server.answers():
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the web process did not start:\n{server.log()}")
            time.sleep(0.2)
        yield server
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
        log_path.unlink(missing_ok=True)


def post(
    server: WebServer, path: str, *, session: str = "", form: dict[str, Any] | None = None,
    body: dict[str, Any] | None = None, key: str = "",
) -> urllib3.BaseHTTPResponse:  # fmt: skip
    """A form posted by a signed-in browser (CSRF token included), or a JSON body with a key."""
    headers: dict[str, str] = {}
    if form is not None:
        data = urlencode({name: str(value) for name, value in form.items()}).encode()
        headers |= {
            "Content-Type": "application/x-www-form-urlencoded",
            "Cookie": f"sessionid={session}; csrftoken={CSRF_SECRET}",
            "X-CSRFToken": CSRF_SECRET,
            "HX-Request": "true",
        }
    else:
        data = json.dumps(body).encode()
        headers |= {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
    return urllib3.request(
        "POST",
        f"{server.url}{path}",
        body=data,
        headers=headers,
        timeout=urllib3.Timeout(connect=30, read=300),
        retries=False,
        redirect=False,
    )


@pytest.mark.django_db(transaction=True)
def test_web_process__hostile_policies_posted__each_answered_naming_the_limit_and_still_up(
    web_server: WebServer,
    draft: BookVersion,
    key: IssuedKey,
    payments: Workflow,
    risk_user: User,
) -> None:
    # Given a web process, bob (risk) signed in with a draft of refunds, and payments whose
    # active version was stored with 800 nested parentheses
    store_published(workflow=payments, author=risk_user, raw=DEEP_PARENS)
    browser = Client()
    browser.force_login(risk_user)
    session = browser.cookies["sessionid"].value
    hostile = [
        ("validate/", form_data(draft, raw_policies=DEEP_PARENS), 200, DEEP_PARENS_CAUSE),
        ("validate/", form_data(draft, raw_policies=LONG_OR), 200, LONG_OR_CAUSE),
        ("try/", try_data(draft, TRY_CHAIN), 200, TRY_CHAIN_CAUSE),
        (
            "",
            form_data(draft, raw_policies=LONG_AND, publish="1", change_note="chain"),
            422,
            LONG_AND_CAUSE,
        ),
    ]
    for path, form, status, cause in hostile:
        # When bob posts hostile raw Cedar to the draft editor
        answer = post(web_server, f"/books/refunds/draft/{path}", session=session, form=form)
        # Then each is answered with the limit, and the process is still up and answering
        assert answer.status == status, web_server.log()[-3000:]
        assert as_problem(cause) in answer.data.decode()
        assert web_server.process.poll() is None
        assert web_server.answers()

    # When refund-bot proposes an action in payments, whose stored version is over the limits
    answer = post(
        web_server, "/api/v1/actions", body=proposal_body(workflow="payments"), key=key.key
    )
    # Then it is denied as not evaluated, naming the limit, and the process is still up
    assert answer.status == 201, web_server.log()[-3000:]
    proposed = json.loads(answer.data)
    assert proposed["decision"] == "deny"
    assert proposed["reasons"][0]["policy"] == engine.NOT_EVALUATED_ID
    assert DEEP_PARENS_CAUSE in proposed["reasons"][0]["message"]
    assert web_server.process.poll() is None
    assert web_server.answers()
    # ... the refunds book is still at version 1, and its draft (saved with the chain) opens
    assert BookVersion.objects.get(workflow__slug="refunds", status="published").number == 1
    page = urllib3.request(
        "GET",
        f"{web_server.url}/books/refunds/draft/",
        headers={"Cookie": f"sessionid={session}"},
        timeout=60,
        retries=False,
    )
    assert page.status == 200


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("own_queue")
def test_worker__backtest_against_stored_version_over_limits__done_and_worker_still_up(
    key: IssuedKey, book: BookVersion, risk_user: User
) -> None:
    # Given one recorded refund (held: above the review cap), then an active version stored
    # with 800 nested parentheses, a valid draft, and a worker running tasks in threads
    held = action_propose(
        key=key.record, proposal=proposal(params=refund_params(amount_cents=30_000))
    )
    assert held.action.decision == "hold"
    store_published(workflow=book.workflow, author=risk_user, raw=DEEP_PARENS)
    draft = draft_create(workflow=book.workflow, user=risk_user)
    draft = draft_update(version_id=draft.pk, user=risk_user, values={"raw_policies": ""})
    worker = worker_start(
        queue=celery_app.conf.task_default_queue,
        name="hostile-policy",
        env={},
        pool="threads",
        concurrency=2,
    )
    try:
        # When a backtest of the draft beside the active version is requested
        requested = backtest_request(workflow=book.workflow, draft=draft, user=risk_user, limit=10)
        # Then the worker loads the stored version, finishes the backtest and stays up
        deadline = time.monotonic() + 180
        while not (backtest := Backtest.objects.get(pk=requested.pk)).finished:
            assert worker.process.poll() is None, worker.log()[-3000:]
            assert time.monotonic() < deadline, worker.log()[-3000:]
            time.sleep(0.2)
        assert backtest.state == Backtest.State.DONE, backtest.error
        # ... where the active version denies, as it could evaluate nothing
        result = backtest.result or {}
        assert result["total"] == 1
        assert result["counts"]["active"]["deny"] == 1
        assert worker.process.poll() is None
        assert celery_app.control.ping(destination=[worker.node], timeout=10)
    finally:
        worker_stop(worker)
