"""Hosted agents: the steps a workflow's agent runs, registered in Python, and what a step can
do while it runs (its StepContext).

    refunds = hosted_agent("refunds", agent="refund-bot")

    @refunds.step("triage", time_budget=20)
    def triage(ctx: StepContext) -> dict[str, Any]:
        answer = ctx.ask("classify_request", ctx.input["ticket"])
        action = ctx.propose("issue_refund", {...}, confidence=answer.confidence)
        return {"category": answer.text}

A step gathers context, asks the router for a model answer (`ask`) and proposes actions
through the same gate as external agents (`propose`); it returns a JSON-able dict, its output,
which later steps read in `ctx.earlier`. Once its time budget is spent the step is stopped:
from then on `ask` and `propose` refuse, so nothing it does afterwards reaches a model or the
gate."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from apps.actions.gate import GateRefusal, Proposal, action_propose
from apps.actions.models import Action
from apps.books.models import BookVersion
from apps.registry.models import AgentKey
from apps.runtime.models import ModelCall, Run, Step, StepAction
from apps.runtime.router import Answer, Served, model_ask


class StepFailed(Exception):
    """A failure that another attempt would not mend (a refused proposal, a bad output)."""


class StepStopped(Exception):
    """The step's time budget is spent: it may no longer call a model or propose."""


@dataclass(frozen=True)
class StepSpec:
    name: str
    func: Callable[[StepContext], Mapping[str, Any] | None]
    time_budget: float
    max_retries: int


@dataclass
class HostedAgent:
    workflow: str
    agent: str
    steps: list[StepSpec] = field(default_factory=list)

    def step(
        self, name: str, *, time_budget: float = 30.0, max_retries: int = 2
    ) -> Callable[
        [Callable[[StepContext], Mapping[str, Any] | None]],
        Callable[[StepContext], Mapping[str, Any] | None],
    ]:
        """Register the decorated function as the next step of this agent's runs."""
        if time_budget <= 0:
            raise ValueError("time_budget must be a positive number of seconds")

        def register(
            func: Callable[[StepContext], Mapping[str, Any] | None],
        ) -> Callable[[StepContext], Mapping[str, Any] | None]:
            self.steps = [spec for spec in self.steps if spec.name != name]
            self.steps.append(StepSpec(name, func, time_budget, max_retries))
            return func

        return register

    def spec(self, index: int) -> StepSpec | None:
        return self.steps[index] if 0 <= index < len(self.steps) else None


_AGENTS: dict[str, HostedAgent] = {}


def hosted_agent(workflow: str, *, agent: str) -> HostedAgent:
    """The hosted agent of `workflow` (one per workflow), registered on first use."""
    existing = _AGENTS.get(workflow)
    if existing is not None and existing.agent == agent:
        return existing
    _AGENTS[workflow] = HostedAgent(workflow=workflow, agent=agent)
    return _AGENTS[workflow]


def hosted_agent_of(workflow: str) -> HostedAgent | None:
    return _AGENTS.get(workflow)


def hosted_agents() -> list[HostedAgent]:
    return [_AGENTS[slug] for slug in sorted(_AGENTS)]


class StepContext:
    def __init__(
        self,
        *,
        run: Run,
        step: Step,
        key: AgentKey,
        book: BookVersion | None,
        earlier: Mapping[str, Any],
        time_budget: float,
    ) -> None:
        self.run = run
        self.step = step
        self.input: Mapping[str, Any] = run.input
        self.subject = run.subject
        self.earlier = earlier
        self.book = book
        self.deadline = time.monotonic() + time_budget
        self.actions: list[Action] = []
        self.answers: list[Answer] = []
        self._key = key
        self._proposals = 0
        self._lock = threading.Lock()
        self._stopped = False

    def remaining(self) -> float:
        return self.deadline - time.monotonic()

    def check(self) -> None:
        """Raise StepStopped once the time budget is spent (steps may call it in loops)."""
        if self._stopped or self.remaining() <= 0:
            raise StepStopped(f"step {self.step.name} ran out of its time budget")

    def stop(self) -> None:
        """Stop the step: waits for a proposal in flight to be recorded, refuses the rest."""
        with self._lock:
            self._stopped = True

    def ask(
        self,
        task: str,
        prompt: str,
        *,
        system: str = "",
        context: Mapping[str, Any] | None = None,
        flags: Iterable[str] = (),
        max_output_tokens: int | None = None,
    ) -> Answer:
        """A model answer for `task`, through the router (masking, budgets, escalation)."""
        self.check()
        answer = model_ask(
            task=task,
            prompt=prompt,
            system=system,
            context=context,
            flags=flags,
            deadline=self.deadline,
            max_output_tokens=max_output_tokens,
            served=Served(
                workflow=self.run.workflow,
                agent=self.run.agent,
                book=self.book,
                run=self.run,
                step=self.step,
            ),
        )
        self.answers.append(answer)
        return answer

    def propose(
        self,
        tool: str,
        params: dict[str, Any],
        *,
        subject: str | None = None,
        confidence: float | Decimal | None = None,
        reasoning: str = "",
        evidence: list[Any] | None = None,
        segment: str = "",
    ) -> Action:
        """Propose an action through the gate, as the run's agent. The idempotency key is the
        run's, the step's and the proposal's position in it: a retried step gets the same
        actions back, never a second one."""
        with self._lock:
            self.check()
            self._proposals += 1
            proposal = Proposal(
                workflow=self.run.workflow.slug,
                tool=tool,
                params=params,
                subject=self.subject if subject is None else subject,
                confidence=None
                if confidence is None
                else Decimal(str(confidence)).quantize(Decimal("0.0001")),
                reasoning=reasoning,
                evidence=evidence or [],
                idempotency_key=f"run-{self.run.pk}-{self.step.index}-{self._proposals}",
                trace_id=self.run.trace_id or str(self.run.pk),
                segment=segment,
            )
            try:
                result = action_propose(key=self._key, proposal=proposal)
            except GateRefusal as refusal:
                where = f" ({refusal.field}: {refusal.message})" if refusal.field else ""
                raise StepFailed(f"the gate refused {tool}: {refusal.detail}{where}") from None
            action = result.action
            StepAction.objects.get_or_create(action=action, defaults={"step": self.step})
            ModelCall.objects.filter(step=self.step, action__isnull=True).update(action=action)
            self.actions.append(action)
            return action

    def earlier_actions(self) -> list[Action]:
        """The actions the run's earlier steps proposed, as they stand now."""
        return list(
            Action.objects.filter(
                runtime_step__step__run=self.run, runtime_step__step__index__lt=self.step.index
            ).order_by("created_at")
        )
