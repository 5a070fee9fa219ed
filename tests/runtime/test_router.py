"""The Model Policy Router: the book's tier per task, escalation on low confidence and on
personal data, the human tier, cost records from the price table, and budget refusals."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import pytest

from apps.registry.models import ModelPrice
from apps.runtime.budgets import BudgetExceeded, month_of
from apps.runtime.config import ModelSettings
from apps.runtime.models import BudgetPeriod, ModelCall
from apps.runtime.providers import ModelRequest
from apps.runtime.providers.deterministic import RuleAnswer, deterministic_model
from apps.runtime.router import RouterError, Served, model_ask
from tests.runtime.conftest import Flow, make_flow
from tests.runtime.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db

SEEN: list[ModelRequest] = []
CONFIDENCE = {"deterministic": 0.95, "small": 0.5, "frontier": 0.9}


@deterministic_model("rt_classify", model="rt-rules")
def rt_classify(request: ModelRequest) -> RuleAnswer:
    SEEN.append(request)
    return RuleAnswer(f"answer at {request.tier}", confidence=CONFIDENCE[request.tier])


@deterministic_model("rt_unsure", model="rt-rules")
def rt_unsure(request: ModelRequest) -> RuleAnswer:
    return RuleAnswer("no idea", confidence=0.1)


POLICY = {
    "rt_classify": {"tier": "small", "escalate_below_confidence": 0.7},
    "rt_no_pii_rule": {"tier": "small", "escalate_on_pii": False},
    "rt_unsure": {"tier": "small", "escalate_below_confidence": 0.7},
    "rt_unserved": {"tier": "small"},
}


@pytest.fixture
def flow(user_for: Any) -> Flow:
    SEEN.clear()
    ModelPrice.objects.create(
        provider="deterministic",
        model="rt-rules",
        input_per_1k=Decimal("0.01"),
        output_per_1k=Decimal("0.03"),
    )
    return make_flow(user_for, book={"model_policy": POLICY})


def served(flow: Flow) -> Served:
    return Served(workflow=flow.workflow, agent=flow.agent, book=flow.book)


def test_low_confidence__goes_one_tier_up(flow: Flow) -> None:
    # Given a route that starts small and escalates below 0.7, and a small answer at 0.5
    # When the router is asked
    answer = model_ask(task="rt_classify", prompt="Where is my parcel?", served=served(flow))
    # Then the frontier tier answered, after the small one
    assert answer.tier == "frontier"
    assert answer.text == "answer at frontier"
    assert [request.tier for request in SEEN] == ["small", "frontier"]
    assert answer.escalations == ["confidence 0.50 below 0.7: small -> frontier"]
    # And both calls were recorded, priced from the price table
    calls = list(ModelCall.objects.order_by("created_at", "pk"))
    assert [(call.tier, call.provider, call.model) for call in calls] == [
        ("small", "deterministic", "rt-rules"),
        ("frontier", "deterministic", "rt-rules"),
    ]
    for call in calls:
        expected = (
            (Decimal(call.input_tokens) * Decimal("0.01") + call.output_tokens * Decimal("0.03"))
            / 1000
            * 100
        )
        assert call.cost_cents == expected.quantize(Decimal("0.000001"))
        assert call.cost_cents > 0
    assert calls[1].escalation.startswith("confidence 0.50")
    assert answer.cost_cents == sum(call.cost_cents for call in calls)


def test_personal_data__goes_one_tier_up_and_is_masked(flow: Flow) -> None:
    # Given a prompt with an email and a phone number
    prompt = "Refund order 1003 please, write to ana@example.com or call +44 20 7946 0958"
    # When the router is asked
    answer = model_ask(task="rt_classify", prompt=prompt, served=served(flow))
    # Then it started one tier up (frontier), and the model never saw the personal data
    assert [request.tier for request in SEEN] == ["frontier"]
    assert answer.escalations == ["pii: small -> frontier"]
    sent = SEEN[0].messages[-1]["content"]
    assert "ana@example.com" not in sent
    assert sent == "Refund order 1003 please, write to [EMAIL] or call [PHONE]"
    # And the call records what was masked
    call = ModelCall.objects.get()
    assert call.pii_counts == {"email": 1, "phone": 1}
    assert call.pii_masked == 2
    assert answer.pii == {"email": 1, "phone": 1}


def test_personal_data__route_says_not_to_escalate__same_tier(flow: Flow) -> None:
    @deterministic_model("rt_no_pii_rule", model="rt-rules")
    def rule(request: ModelRequest) -> RuleAnswer:
        return RuleAnswer(request.tier, confidence=0.9)

    answer = model_ask(task="rt_no_pii_rule", prompt="mail ana@example.com", served=served(flow))
    assert answer.tier == "small"
    assert ModelCall.objects.get().pii_counts == {"email": 1}


def test_compliance_flag__goes_one_tier_up(flow: Flow) -> None:
    answer = model_ask(
        task="rt_classify", prompt="plain text", served=served(flow), flags=["vip-customer"]
    )
    assert answer.escalations[0] == "vip-customer: small -> frontier"
    assert answer.tier == "frontier"


def test_unsure_at_every_tier__handed_to_a_person(flow: Flow) -> None:
    answer = model_ask(task="rt_unsure", prompt="?", served=served(flow))
    assert answer.needs_human
    assert answer.tier == "human"
    assert len(answer.calls) == 2  # small, then frontier; a person is not a model call
    assert answer.escalations[-1] == "confidence 0.10 below 0.7: frontier -> human"


def test_task_not_in_the_book__cheapest_tier_with_a_rule(flow: Flow) -> None:
    @deterministic_model("rt_unlisted", model="rt-rules")
    def rule(request: ModelRequest) -> RuleAnswer:
        return RuleAnswer(request.tier)

    answer = model_ask(task="rt_unlisted", prompt="x", served=served(flow))
    assert answer.tier == "deterministic"


def test_no_rule_and_no_provider__clear_error(flow: Flow) -> None:
    with pytest.raises(RouterError, match="task 'rt_unserved': tier small needs a model provider"):
        model_ask(task="rt_unserved", prompt="x", served=served(flow))


def test_openai_tiers__real_models_priced_and_escalated(
    flow: Flow, openai_models: ModelSettings, fake_openai: FakeOpenAI
) -> None:
    # Given the small and frontier tiers on an OpenAI-compatible server, with prices
    ModelPrice.objects.get_or_create(
        provider="openai",
        model="gpt-4o-mini",
        defaults={"input_per_1k": Decimal("0.00015"), "output_per_1k": Decimal("0.0006")},
    )
    ModelPrice.objects.get_or_create(
        provider="openai",
        model="gpt-4o",
        defaults={"input_per_1k": Decimal("0.0025"), "output_per_1k": Decimal("0.01")},
    )
    fake_openai.script = [
        Reply(
            content='{"confidence": 0.95}', usage={"prompt_tokens": 1000, "completion_tokens": 100}
        )
    ]
    # When the router is asked with a card number in the text
    answer = model_ask(task="rt_classify", prompt="card 4111 1111 1111 1111", served=served(flow))
    # Then the frontier model answered at once (personal data raises the tier), never seeing it
    assert [seen.body["model"] for seen in fake_openai.seen] == ["gpt-4o"]
    assert "4111" not in fake_openai.seen[0].body["messages"][-1]["content"]
    assert answer.tier == "frontier"
    call = ModelCall.objects.get()
    # 1000 in at 0.0025 + 100 out at 0.01 per 1k = 0.0035 USD = 0.35 cents
    assert (call.provider, call.model, call.input_tokens, call.output_tokens) == (
        "openai", "gpt-4o", 1000, 100,
    )  # fmt: skip
    assert call.cost_cents == Decimal("0.350000")
    assert call.currency == "USD"


def test_openai_low_confidence__small_then_frontier(
    flow: Flow, openai_models: ModelSettings, fake_openai: FakeOpenAI
) -> None:
    fake_openai.script = [
        Reply(content='{"confidence": 0.4}'),
        Reply(content='{"confidence": 0.95}'),
    ]
    answer = model_ask(task="rt_classify", prompt="where is my parcel", served=served(flow))
    assert [seen.body["model"] for seen in fake_openai.seen] == ["gpt-4o-mini", "gpt-4o"]
    assert answer.confidence == 0.95
    assert answer.model == "gpt-4o"
    # No price for these models here: recorded, marked unpriced, at no cost
    assert list(ModelCall.objects.values_list("priced", flat=True)) == [False, False]


def test_budget__call_over_it__refused_naming_the_budget(user_for: Any) -> None:
    # Given a workflow whose book allows 1 cent of model spend a month, and a pricey model
    ModelPrice.objects.create(
        provider="deterministic",
        model="rt-rules",
        input_per_1k=Decimal("10"),
        output_per_1k=Decimal("10"),
    )
    flow = make_flow(user_for, book={"model_policy": POLICY, "monthly_budget_cents": 1})
    SEEN.clear()
    # When a call is asked for
    with pytest.raises(BudgetExceeded) as caught:
        model_ask(task="rt_classify", prompt="hello", served=served(flow))
    # Then it is refused, naming the budget and what is left, and the model is never called
    budget = f"workflow rt-flow {month_of():%Y-%m}"
    assert caught.value.budget == budget
    assert caught.value.remaining == Decimal(1)
    assert re.search(rf"budget {budget} would be exceeded: 1 cents remain", str(caught.value))
    assert SEEN == []
    call = ModelCall.objects.get()
    assert call.outcome == "refused"
    assert budget in call.error
    period = BudgetPeriod.objects.get(scope="workflow", workflow=flow.workflow)
    assert period.refused_calls == 1
    assert period.reserved_cents == 0
