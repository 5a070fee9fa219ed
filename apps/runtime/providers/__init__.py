"""Model providers: what answers a model request. `deterministic` runs Python callables (no
model at all); `openai` speaks the chat-completions protocol of OpenAI and of every server
compatible with it (vLLM, Ollama, LiteLLM)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True)
class ModelRequest:
    """One request to a model. The text in `messages` is already masked of personal data."""

    task: str
    tier: str
    model: str
    messages: tuple[Mapping[str, str], ...]
    max_output_tokens: int
    timeout_seconds: float
    context: Mapping[str, Any] = field(default_factory=dict)
    # time.monotonic() by which the answer must be in (the step's time budget); retries stop
    # there.
    deadline: float | None = None


@dataclass(frozen=True)
class ModelReply:
    text: str
    input_tokens: int
    output_tokens: int
    confidence: float | None = None
    data: Mapping[str, Any] | None = None


class ProviderError(Exception):
    """A call that did not produce an answer. `transient` failures (timeouts, 5xx, 429,
    broken connections) are worth another try; the others are not."""

    def __init__(self, message: str, *, transient: bool, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.transient = transient
        self.status = status


class ProviderUnavailable(ProviderError):
    """The provider's circuit is open: the call was not made."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class Provider(Protocol):
    name: str

    def complete(self, request: ModelRequest) -> ModelReply: ...
