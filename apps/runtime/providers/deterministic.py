"""The `deterministic` provider: Python callables registered per task type, no model at all.

A hosted agent registers one for each task it can settle by rules (and, when no model
provider is configured, for the tasks of the small and frontier tiers too, which is how the
demo runs without one). The tier asked for is passed along, so a rule can be stricter or more
thorough at a higher tier. Tokens are counted as a model would have seen the same text, so
that the cost records of a deterministic stand-in and of a real model compare."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from apps.runtime.pricing import estimate_tokens
from apps.runtime.providers import ModelReply, ModelRequest, ProviderError

DEFAULT_MODEL = "rules-v1"


@dataclass(frozen=True)
class RuleAnswer:
    text: str
    confidence: float | None = None
    data: Mapping[str, Any] | None = None


Rule = Callable[[ModelRequest], RuleAnswer]

_RULES: dict[str, tuple[str, Rule]] = {}


def deterministic_model(task: str, *, model: str = DEFAULT_MODEL) -> Callable[[Rule], Rule]:
    """Register `rule` as the deterministic model of `task`."""

    def register(rule: Rule) -> Rule:
        _RULES[task] = (model, rule)
        return rule

    return register


def rule_for(task: str) -> tuple[str, Rule] | None:
    return _RULES.get(task)


class DeterministicProvider:
    name = "deterministic"

    def complete(self, request: ModelRequest) -> ModelReply:
        found = rule_for(request.task)
        if found is None:
            raise ProviderError(
                f"no deterministic model is registered for task {request.task!r}", transient=False
            )
        _, rule = found
        answer = rule(request)
        prompt = "\n".join(message["content"] for message in request.messages)
        return ModelReply(
            text=answer.text,
            input_tokens=estimate_tokens(prompt),
            output_tokens=estimate_tokens(answer.text) if answer.text else 0,
            confidence=answer.confidence,
            data=answer.data,
        )
