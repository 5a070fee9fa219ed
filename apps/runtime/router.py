"""The Model Policy Router: which tier answers a task, and when to go one tier up.

Per task type the workflow's Decision Book (`model_policy`) names a tier and an escalation rule:

    {"classify_request": {"tier": "small", "escalate_below_confidence": 0.7,
                          "escalate_on_pii": true}}

Tiers, cheapest first: `deterministic` (code), `small` and `frontier` (models), `human` (no
call; the step hands the decision to a person). A task the book does not name goes to the
cheapest adequate tier: deterministic code when a rule is registered for it, else the small
model. The router goes one tier up when personal data was found in the text (and the route
says `escalate_on_pii`, the default) or the caller raises a compliance flag, and again after an
answer whose confidence is below the route's threshold.

Before any text leaves, personal data is masked (apps.runtime.pii). Before each call its
expected cost is reserved against the budgets (apps.runtime.budgets); after it, the real cost
from the model price table is settled and the call is recorded (ModelCall) with its provider,
model, tier, tokens, cost, latency, masked counts and the run, step and action it served."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db import transaction
from django.db.models import F
from pydantic import ValidationError as PydanticError

from apps.books.content import ModelRoute
from apps.books.models import BookVersion
from apps.registry.models import Agent, Workflow
from apps.runtime.budgets import BudgetExceeded, budget_release, budget_reserve, budget_settle
from apps.runtime.config import ModelSettings
from apps.runtime.models import BudgetReservation, ModelCall, Run, Step
from apps.runtime.pii import mask
from apps.runtime.pricing import Price, cost_cents, estimate_tokens, price_find
from apps.runtime.providers import (
    ModelReply,
    ModelRequest,
    Provider,
    ProviderError,
)
from apps.runtime.providers.deterministic import DeterministicProvider, rule_for
from apps.runtime.providers.openai import OpenAIProvider

logger = logging.getLogger(__name__)

TIERS = ("deterministic", "small", "frontier", "human")


class RouterError(Exception):
    """The task cannot be routed: no model serves it, or the book's route is malformed."""


@dataclass(frozen=True)
class Route:
    tier: str
    escalate_below_confidence: float | None = None
    escalate_on_pii: bool = True


@dataclass
class Answer:
    """What the router settled on. `needs_human` means the task went up to the human tier:
    no model answered, a person must decide (propose with no confidence, and the book holds)."""

    text: str
    confidence: float | None
    data: Mapping[str, Any] | None
    tier: str
    provider: str
    model: str
    needs_human: bool = False
    pii: dict[str, int] = field(default_factory=dict)
    escalations: list[str] = field(default_factory=list)
    calls: list[ModelCall] = field(default_factory=list)

    @property
    def cost_cents(self) -> Decimal:
        return sum((call.cost_cents for call in self.calls), Decimal(0))


def next_tier(tier: str) -> str:
    return TIERS[min(TIERS.index(tier) + 1, len(TIERS) - 1)]


def route_for(book: BookVersion | None, task: str) -> Route:
    raw = (book.model_policy or {}).get(task) if book is not None else None
    if raw is None:
        return Route(tier="deterministic" if rule_for(task) else "small")
    try:
        route = ModelRoute.model_validate(raw)
    except PydanticError as exc:
        first = exc.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "route"
        raise RouterError(f"model_policy.{task}.{where}: {first['msg']}") from None
    return Route(route.tier, route.escalate_below_confidence, route.escalate_on_pii)


def provider_for(tier: str, task: str, models: ModelSettings) -> tuple[Provider, str]:
    """The provider and model of `tier` for `task` under the configuration."""
    if tier == "deterministic" or models.provider == "deterministic":
        found = rule_for(task)
        if found is None:
            if tier == "deterministic":
                raise RouterError(f"task {task!r}: no deterministic model is registered for it")
            raise RouterError(
                f"task {task!r}: tier {tier} needs a model provider (MODEL_PROVIDER=openai) "
                "or a deterministic model registered for the task"
            )
        return DeterministicProvider(), found[0]
    provider = OpenAIProvider(
        name=models.price_provider,
        base_url=models.base_url,
        api_key=models.api_key,
        max_retries=models.max_retries,
        breaker_threshold=models.breaker_threshold,
        breaker_cooldown_seconds=models.breaker_cooldown_seconds,
    )
    return provider, models.small_model if tier == "small" else models.frontier_model


@dataclass(frozen=True)
class Served:
    """What a call served, for its cost record."""

    workflow: Workflow
    agent: Agent
    book: BookVersion | None
    run: Run | None = None
    step: Step | None = None


def model_ask(
    *,
    task: str,
    prompt: str,
    served: Served,
    system: str = "",
    context: Mapping[str, Any] | None = None,
    flags: Iterable[str] = (),
    deadline: float | None = None,
    max_output_tokens: int | None = None,
) -> Answer:
    """Answer `task` for `prompt` at the tier the book routes it to, escalating as the route
    says. Raises BudgetExceeded (naming the budget) when a call would overspend, ProviderError
    when the provider could not answer, RouterError when nothing can serve the task."""
    models: ModelSettings = settings.RUNTIME_MODELS
    masked_prompt, masked_system = mask(prompt), mask(system)
    pii: dict[str, int] = dict(masked_prompt.counts)
    for kind, count in masked_system.counts.items():
        pii[kind] = pii.get(kind, 0) + count
    messages: list[dict[str, str]] = []
    if masked_system.text:
        messages.append({"role": "system", "content": masked_system.text})
    messages.append({"role": "user", "content": masked_prompt.text})

    route = route_for(served.book, task)
    tier = route.tier
    escalations: list[str] = []
    raised = [flag for flag in flags if flag]
    if pii and route.escalate_on_pii:
        raised.insert(0, "pii")
    if raised and tier != "human":
        tier = next_tier(route.tier)
        escalations.append(f"{', '.join(raised)}: {route.tier} -> {tier}")
    calls: list[ModelCall] = []
    while True:
        if tier == "human":
            return Answer(
                text="",
                confidence=None,
                data=None,
                tier="human",
                provider="",
                model="",
                needs_human=True,
                pii=pii,
                escalations=escalations,
                calls=calls,
            )
        provider, model = provider_for(tier, task, models)
        request = ModelRequest(
            task=task,
            tier=tier,
            model=model,
            messages=tuple(messages),
            max_output_tokens=max_output_tokens or models.max_output_tokens,
            timeout_seconds=models.timeout_seconds,
            context=dict(context or {}),
            deadline=deadline,
        )
        reply, call = _call(
            provider,
            request,
            served=served,
            pii=pii,
            escalation=escalations[-1][:200] if escalations else "",
        )
        calls.append(call)
        threshold = route.escalate_below_confidence
        if threshold is not None and reply.confidence is not None and reply.confidence < threshold:
            higher = next_tier(tier)
            escalations.append(
                f"confidence {reply.confidence:.2f} below {threshold:g}: {tier} -> {higher}"
            )
            tier = higher
            continue
        return Answer(
            text=reply.text,
            confidence=reply.confidence,
            data=reply.data,
            tier=tier,
            provider=provider.name,
            model=model,
            pii=pii,
            escalations=escalations,
            calls=calls,
        )


def _record(
    request: ModelRequest,
    provider: Provider,
    served: Served,
    pii: dict[str, int],
    escalation: str,
    price: Price | None,
    **fields: Any,
) -> ModelCall:
    return ModelCall.objects.create(
        source=ModelCall.Source.HOSTED,
        workflow=served.workflow,
        agent=served.agent,
        run=served.run,
        step=served.step,
        task=request.task,
        tier=request.tier,
        provider=provider.name,
        model=request.model,
        currency=price.currency if price else "",
        priced=price is not None,
        pii_counts=pii,
        pii_masked=sum(pii.values()),
        escalation=escalation,
        **fields,
    )


def _call(
    provider: Provider,
    request: ModelRequest,
    *,
    served: Served,
    pii: dict[str, int],
    escalation: str,
) -> tuple[ModelReply, ModelCall]:
    price = price_find(provider.name, request.model)
    prompt = "\n".join(message["content"] for message in request.messages)
    expected = cost_cents(price, estimate_tokens(prompt), request.max_output_tokens)
    reservation: BudgetReservation | None = None
    if expected > 0:
        try:
            reservation = budget_reserve(
                workflow=served.workflow, agent=served.agent, book=served.book, amount=expected
            )
        except BudgetExceeded as exc:
            _record(
                request,
                provider,
                served,
                pii,
                escalation,
                price,
                outcome=ModelCall.Outcome.REFUSED,
                error=str(exc),
            )
            raise
    started = time.monotonic()
    try:
        reply = provider.complete(request)
    except ProviderError as exc:
        latency = int((time.monotonic() - started) * 1000)
        if reservation is not None:
            budget_release(reservation)
        _record(
            request,
            provider,
            served,
            pii,
            escalation,
            price,
            outcome=ModelCall.Outcome.FAILED,
            error=exc.message,
            latency_ms=latency,
        )
        logger.warning(
            "model call failed: task %s, %s/%s: %s",
            request.task,
            provider.name,
            request.model,
            exc.message,
        )
        raise
    except BaseException:
        if reservation is not None:
            budget_release(reservation)
        raise
    latency = int((time.monotonic() - started) * 1000)
    cost = cost_cents(price, reply.input_tokens, reply.output_tokens)
    with transaction.atomic():
        call = _record(
            request,
            provider,
            served,
            pii,
            escalation,
            price,
            input_tokens=reply.input_tokens,
            output_tokens=reply.output_tokens,
            cost_cents=cost,
            latency_ms=latency,
        )
        if reservation is not None:
            budget_settle(reservation, actual=cost)
            BudgetReservation.objects.filter(pk=reservation.pk).update(model_call=call)
        if cost and served.run is not None:
            Run.objects.filter(pk=served.run.pk).update(cost_cents=F("cost_cents") + cost)
        if cost and served.step is not None:
            Step.objects.filter(pk=served.step.pk).update(cost_cents=F("cost_cents") + cost)
    return reply, call
