"""The model usage an agent reports with a proposal (`usage`) is its own word, so it is bounded,
priced from the model price table (never at a cost the agent claims), and charged to the
agent's own budget as well as its workflow's; usage that is out of bounds, unpriced or over a
budget is refused with the proposal, naming the field or the budget, and nothing is recorded."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.accounts.roles import Role
from apps.actions.models import Action
from apps.audit.models import AuditEvent
from apps.books.models import BookVersion
from apps.registry.models import Agent, ModelPrice, Tool, Workflow
from apps.registry.services import IssuedKey
from apps.runtime.budgets import (
    USAGE_MAX_INPUT_TOKENS,
    USAGE_MAX_OUTPUT_TOKENS,
    budget_reserve,
    month_of,
)
from apps.runtime.models import AgentBudget, BudgetPeriod, ModelCall
from tests.actions.conftest import proposal_body, propose, recorded
from tests.concurrency import at_once
from tests.factories import REFUND_CONTROLS, make_published_book

MONTH = month_of()

# 80k tokens in at 0.0025 and 100k out at 0.01 per 1,000: 0.20 + 1.00 = 1.20 EUR.
USAGE: dict[str, Any] = {
    "model": "gpt-4o",
    "provider": "openai",
    "input_tokens": 80_000,
    "output_tokens": 100_000,
}
USAGE_CENTS = Decimal(120)


@pytest.fixture
def prices(db: Any) -> None:
    ModelPrice.objects.create(
        provider="openai", model="gpt-4o", currency="EUR",
        input_per_1k=Decimal("0.0025"), output_per_1k=Decimal("0.01"),
    )  # fmt: skip
    ModelPrice.objects.create(
        provider="local", model="llama-3.1-8b", currency="EUR",
        input_per_1k=Decimal("0.00002"), output_per_1k=Decimal("0.00002"),
    )  # fmt: skip


def spent(scope: str, owner: Agent | Workflow) -> Decimal:
    period = BudgetPeriod.objects.filter(scope=scope, month=MONTH, **{scope: owner}).first()
    return period.spent_cents if period is not None else Decimal(0)


def snapshot() -> tuple[Any, ...]:
    """What a refused proposal must leave as it was: actions, audit events, cost records and
    every budget's spend."""
    budgets = tuple(BudgetPeriod.objects.order_by("pk").values_list("pk", "spent_cents"))
    return (*recorded(), ModelCall.objects.count(), budgets)


def propose_with(key: IssuedKey, usage: Any, **changes: Any) -> Any:
    return propose(Client(), key.key, proposal_body(usage=usage, **changes))


def error_of(response: Any) -> tuple[str, str]:
    [error] = response.json()["errors"]
    return error["field"], error["message"]


# Priced and charged to both budgets


@pytest.mark.usefixtures("book", "prices")
def test_usage__priced_from_the_table__charged_to_workflow_and_agent(
    key: IssuedKey, agent: Agent, refunds: Workflow
) -> None:
    # When refund-bot reports the model call behind its proposal
    response = propose_with(key, USAGE)
    # Then it is recorded at the table's price, as a cost of the action
    assert response.status_code == 201, response.content
    call = ModelCall.objects.get()
    assert str(call.action_id) == response.json()["id"]
    assert (call.source, call.provider, call.model, call.priced) == (
        "external",
        "openai",
        "gpt-4o",
        True,
    )
    assert (call.cost_cents, call.currency) == (USAGE_CENTS, "EUR")
    # And charged to the workflow's budget and to the agent's own
    assert spent("workflow", refunds) == USAGE_CENTS
    assert spent("agent", agent) == USAGE_CENTS


@pytest.mark.usefixtures("book", "prices")
@pytest.mark.parametrize("claim", [{"cost_cents": 0}, {"cost": "0.00"}, {"price": 0}])
def test_usage__claimed_cost__ignored_and_priced_from_the_table(
    key: IssuedKey, claim: dict[str, Any]
) -> None:
    # When the agent reports its own, lower, cost beside the tokens
    response = propose_with(key, {**USAGE, **claim})
    # Then the claim is not a price: the table's is charged
    assert response.status_code == 201, response.content
    assert ModelCall.objects.get().cost_cents == USAGE_CENTS


@pytest.mark.usefixtures("book", "prices")
def test_usage__repeated_idempotency_key__charged_once(key: IssuedKey, agent: Agent) -> None:
    first = propose_with(key, USAGE, idempotency_key="ticket-1")
    again = propose_with(key, USAGE, idempotency_key="ticket-1")
    assert (first.status_code, again.status_code) == (201, 200)
    assert ModelCall.objects.count() == 1
    assert spent("agent", agent) == USAGE_CENTS


# Bounded


@pytest.mark.usefixtures("book", "prices")
@pytest.mark.parametrize(
    ("field", "maximum"),
    [("input_tokens", USAGE_MAX_INPUT_TOKENS), ("output_tokens", USAGE_MAX_OUTPUT_TOKENS)],
)
def test_usage__tokens_past_the_bound__422_naming_the_field_nothing_recorded(
    key: IssuedKey, field: str, maximum: int
) -> None:
    # Given the trail, the actions and the budgets as they stand
    before = snapshot()
    # When an agent reports one token more than any proposal may (the API's own limit is far
    # higher: 100 million)
    response = propose_with(key, {**USAGE, field: maximum + 1})
    # Then the proposal is refused naming the field and the bound, and nothing is recorded
    assert response.status_code == 422, response.content
    assert error_of(response) == (
        f"usage.{field}",
        f"must be at most {maximum:,} (the most one proposal may report); got {maximum + 1:,}",
    )
    assert snapshot() == before


@pytest.mark.usefixtures("book", "prices")
def test_usage__tokens_at_the_bound__accepted(key: IssuedKey) -> None:
    usage = {
        "model": "llama-3.1-8b",
        "input_tokens": USAGE_MAX_INPUT_TOKENS,
        "output_tokens": USAGE_MAX_OUTPUT_TOKENS,
    }
    response = propose_with(key, usage)
    assert response.status_code == 201, response.content
    # 2.5 million tokens at 0.00002 per 1,000: 0.05 EUR
    assert ModelCall.objects.get().cost_cents == Decimal(5)


# Priced from the table, or refused


@pytest.mark.usefixtures("book", "prices")
@pytest.mark.parametrize(
    ("usage", "field", "message"),
    [
        (
            {"model": "mystery-7b"},
            "usage.model",
            "'mystery-7b' has no price in the model price table; report a priced model, or ask "
            "an admin to add its price",
        ),
        (
            {"model": "gpt-4o", "provider": "azure"},
            "usage.provider",
            "'gpt-4o' is not priced at 'azure'; it is priced at openai",
        ),
    ],
)
def test_usage__model_without_a_price__422_naming_the_field_nothing_recorded(
    key: IssuedKey, usage: dict[str, Any], field: str, message: str
) -> None:
    before = snapshot()
    response = propose_with(key, {**USAGE, "provider": "", **usage})
    assert response.status_code == 422, response.content
    assert error_of(response) == (field, message)
    assert snapshot() == before


@pytest.mark.usefixtures("book", "prices")
def test_usage__model_priced_at_two_providers_none_named__422_asking_for_one(
    key: IssuedKey,
) -> None:
    ModelPrice.objects.create(
        provider="azure", model="gpt-4o", input_per_1k=Decimal(1), output_per_1k=Decimal(1)
    )
    before = snapshot()
    response = propose_with(key, {**USAGE, "provider": ""})
    assert response.status_code == 422
    assert error_of(response) == (
        "usage.provider",
        "'gpt-4o' is priced at several providers (azure, openai); name one",
    )
    assert snapshot() == before


# Over a budget: refused, naming it


@pytest.mark.usefixtures("book", "prices")
def test_usage__past_the_agents_budget__409_naming_it_nothing_recorded(
    key: IssuedKey, agent: Agent, refunds: Workflow
) -> None:
    # Given refund-bot's own budget of 0.40 EUR for the month, nothing spent yet
    AgentBudget.objects.create(agent=agent, monthly_limit_cents=40)
    before = snapshot()
    # When it reports usage costing 1.20 EUR
    response = propose_with(key, USAGE)
    # Then the proposal is refused naming the agent's budget, what is left and what it costs
    assert response.status_code == 409, response.content
    assert error_of(response) == (
        "usage",
        f"agent refund-bot's budget for {MONTH:%Y-%m} has 0.40 EUR left; this usage costs 1.20 EUR",
    )
    # And neither the action nor its cost reached any record or budget
    assert snapshot() == before
    assert spent("agent", agent) == spent("workflow", refunds) == 0


@pytest.mark.usefixtures("prices")
def test_usage__past_the_workflows_budget__409_naming_it(
    key: IssuedKey, refunds: Workflow, refund_tool: Tool, risk_user: User
) -> None:
    # Given the refunds book's monthly budget of 1.00 EUR, and an agent without a budget
    make_published_book(
        workflow=refunds, author=risk_user, values={**REFUND_CONTROLS, "monthly_budget_cents": 100}
    )
    before = snapshot()
    response = propose_with(key, USAGE)
    assert response.status_code == 409
    assert error_of(response) == (
        "usage",
        f"workflow refunds's budget for {MONTH:%Y-%m} has 1.00 EUR left; this usage costs 1.20 EUR",
    )
    assert snapshot() == before


@pytest.mark.usefixtures("prices")
def test_usage__both_budgets_short__the_agents_named(
    key: IssuedKey, agent: Agent, refunds: Workflow, refund_tool: Tool, risk_user: User
) -> None:
    make_published_book(
        workflow=refunds, author=risk_user, values={**REFUND_CONTROLS, "monthly_budget_cents": 100}
    )
    AgentBudget.objects.create(agent=agent, monthly_limit_cents=50)
    response = propose_with(key, USAGE)
    assert response.status_code == 409
    assert error_of(response)[1].startswith("agent refund-bot's budget")


@pytest.mark.usefixtures("prices")
def test_usage__budget_held_by_running_calls__counts_as_used(
    key: IssuedKey, agent: Agent, refunds: Workflow, book: BookVersion
) -> None:
    # Given a 2.00 EUR agent budget of which a hosted call in flight holds 1.00
    AgentBudget.objects.create(agent=agent, monthly_limit_cents=200)
    budget_reserve(workflow=refunds, agent=agent, book=book, amount=Decimal(100))
    # When the agent reports usage costing 1.20 EUR
    response = propose_with(key, USAGE)
    # Then only the 1.00 EUR not held is left for it
    assert response.status_code == 409
    assert "has 1.00 EUR left" in error_of(response)[1]


@pytest.mark.usefixtures("book", "prices")
def test_usage__exactly_what_is_left__accepted_and_budget_spent(
    key: IssuedKey, agent: Agent
) -> None:
    AgentBudget.objects.create(agent=agent, monthly_limit_cents=120)
    assert propose_with(key, USAGE).status_code == 201
    # And the next cent is refused
    response = propose_with(key, {**USAGE, "input_tokens": 0, "output_tokens": 1_000})
    assert response.status_code == 409
    assert "has 0.00 EUR left; this usage costs 0.01 EUR" in error_of(response)[1]


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("book", "prices", "enqueued")
def test_usage__two_proposals_race_for_the_last_budget__one_passes(
    key: IssuedKey, agent: Agent
) -> None:
    # Given a budget with room for one report of USAGE, not two
    AgentBudget.objects.create(agent=agent, monthly_limit_cents=200)

    # When two proposals reporting it arrive at the same instant
    def attempt(index: int) -> int:
        status: int = propose_with(key, USAGE, idempotency_key=f"race-{index}").status_code
        return status

    statuses = at_once(2, attempt)
    # Then one is accepted and charged, the other refused: the budget is never passed
    assert sorted(statuses) == [201, 409]
    assert spent("agent", agent) == USAGE_CENTS
    assert Action.objects.count() == 1


# Finance sees and sets the agent's budget


def test_budgets_page__finance_sets_an_agents_budget__shown_audited_and_enforced(
    client_for: Any, key: IssuedKey, agent: Agent, book: BookVersion, prices: None
) -> None:
    # Given charlie, of finance, on the budgets page: refund-bot has no budget of its own
    client = client_for(Role.FINANCE)
    page = client.get("/runtime/budgets/").content.decode()
    assert 'id="agent-budgets"' in page
    assert "refund-bot" in page
    # When he gives refund-bot 0.50 a month
    response = client.post(
        "/runtime/budgets/agents/",
        {"agent": "refund-bot", "monthly_limit": "0.50", "soft_limit_percent": "75"},
    )
    # Then it is set, shown, and audited as his doing
    assert response.status_code == 302
    budget = AgentBudget.objects.get(agent=agent)
    assert (budget.monthly_limit_cents, budget.soft_limit_percent) == (50, 75)
    event = AuditEvent.objects.get(verb="agent_budget.set")
    assert (event.actor, event.payload["before"]) == ("charlie", None)
    assert event.payload["after"] == {"monthly_limit_cents": 50, "soft_limit_percent": 75}
    assert "0.50" in client.get("/runtime/budgets/").content.decode()
    # And the agent's next report over it is refused, naming that budget
    refused = propose_with(key, USAGE)
    assert refused.status_code == 409
    assert "has 0.50 EUR left" in error_of(refused)[1]


@pytest.mark.usefixtures("agent")
def test_budgets_page__limit_emptied__budget_removed_and_audited(client_for: Any) -> None:
    client = client_for(Role.FINANCE)
    client.post("/runtime/budgets/agents/", {"agent": "refund-bot", "monthly_limit": "5",
                                              "soft_limit_percent": "80"})  # fmt: skip
    client.post("/runtime/budgets/agents/", {"agent": "refund-bot", "monthly_limit": "",
                                              "soft_limit_percent": "80"})  # fmt: skip
    assert not AgentBudget.objects.exists()
    removed = AuditEvent.objects.get(verb="agent_budget.removed")
    assert removed.payload["before"] == {"monthly_limit_cents": 500, "soft_limit_percent": 80}


@pytest.mark.usefixtures("agent")
@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"agent": "nobody-bot"}, "agent"),
        ({"monthly_limit": "-1"}, "monthly_limit"),
        ({"monthly_limit": "0.001"}, "monthly_limit"),
        ({"monthly_limit": "lots"}, "monthly_limit"),
        ({"soft_limit_percent": "0"}, "soft_limit_percent"),
        ({"soft_limit_percent": "101"}, "soft_limit_percent"),
    ],
)
def test_budgets_page__bad_input__422_with_the_field_in_error_nothing_set(
    client_for: Any, change: dict[str, str], field: str
) -> None:
    form = {"agent": "refund-bot", "monthly_limit": "5", "soft_limit_percent": "80", **change}
    response = client_for(Role.FINANCE).post("/runtime/budgets/agents/", form)
    assert response.status_code == 422
    assert response.context["agent_budget_form"].errors.keys() == {field}
    assert not AgentBudget.objects.exists()
    assert not AuditEvent.objects.filter(verb__startswith="agent_budget.").exists()


@pytest.mark.usefixtures("agent")
@pytest.mark.parametrize("role", [Role.SUPERVISOR, Role.ONCALL, Role.RISK, Role.ADMIN])
def test_budgets_page__other_roles__403_nothing_set(client_for: Any, role: Role) -> None:
    response = client_for(role).post(
        "/runtime/budgets/agents/",
        {"agent": "refund-bot", "monthly_limit": "5", "soft_limit_percent": "80"},
    )
    assert response.status_code == 403
    assert not AgentBudget.objects.exists()
