"""The `openai` provider: any endpoint that speaks OpenAI's chat-completions protocol (OpenAI,
vLLM, Ollama, LiteLLM, ...), configured by base URL, model names and key.

`POST {base_url}/chat/completions` with `{"model", "messages", "max_tokens", "temperature"}`;
the answer's `choices[0].message.content` is the text and `usage.prompt_tokens` /
`usage.completion_tokens` are what the call is priced on. A timeout, a broken connection, 408,
409, 429 or 5xx is transient: retried with backoff while the step's time allows, and counted by
the provider's circuit breaker. Any other 4xx (a bad key, an unknown model) is permanent.

The key goes in the Authorization header and nowhere else: never into an error message or a
log line, and any echo of it in a provider's error body is blanked."""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable, Mapping
from typing import Any

import urllib3

from apps.core.backoff import backoff
from apps.runtime.pii import mask_text
from apps.runtime.pricing import estimate_tokens
from apps.runtime.providers import ModelReply, ModelRequest, ProviderError, ProviderUnavailable
from apps.runtime.providers.breaker import (
    provider_allows,
    provider_failure,
    provider_last_error,
    provider_success,
)

logger = logging.getLogger(__name__)

_pool = urllib3.PoolManager(num_pools=8, maxsize=8, retries=False)
TRANSIENT_STATUSES = frozenset({408, 409, 425, 429})
_FENCE = re.compile(r"^```(?:json)?\s*(.*?)\s*```$", re.DOTALL)


def parse_answer(text: str) -> tuple[Mapping[str, Any] | None, float | None]:
    """The JSON object a model answered with (also inside a ``` fence), and its `confidence`
    when that is a number from 0 to 1."""
    body = text.strip()
    fenced = _FENCE.match(body)
    if fenced:
        body = fenced.group(1)
    if not body.startswith("{"):
        return None, None
    try:
        data = json.loads(body)
    except json.JSONDecodeError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    raw = data.get("confidence")
    confidence = (
        float(raw)
        if isinstance(raw, int | float) and not isinstance(raw, bool) and 0 <= raw <= 1
        else None
    )
    return data, confidence


class OpenAIProvider:
    def __init__(
        self,
        *,
        name: str,
        base_url: str,
        api_key: str,
        max_retries: int,
        breaker_threshold: int,
        breaker_cooldown_seconds: float,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.name = name
        self.url = base_url.rstrip("/") + "/chat/completions"
        self._key = api_key
        self.max_retries = max_retries
        self.breaker_threshold = breaker_threshold
        self.breaker_cooldown_seconds = breaker_cooldown_seconds
        self._sleep = sleep

    def __repr__(self) -> str:
        return f"OpenAIProvider(name={self.name!r}, url={self.url!r})"

    def complete(self, request: ModelRequest) -> ModelReply:
        attempt = 0
        while True:
            if not provider_allows(self.name, cooldown_seconds=self.breaker_cooldown_seconds):
                raise ProviderUnavailable(
                    f"{self.name} is failing, calls are paused: {provider_last_error(self.name)}"
                )
            try:
                reply = self._once(request)
            except ProviderError as exc:
                opened = False
                if exc.transient:
                    opened = provider_failure(
                        self.name, exc.message, threshold=self.breaker_threshold
                    )
                    if opened:
                        logger.warning("circuit opened for provider %s: %s", self.name, exc.message)
                attempt += 1
                # Short: the step waits for this call, within its own time limit.
                wait = backoff(attempt, base=0.25, cap=4.0)
                out_of_time = (
                    request.deadline is not None and time.monotonic() + wait >= request.deadline
                )
                if not exc.transient or opened or attempt > self.max_retries or out_of_time:
                    if attempt > 1:
                        exc.message += f" (after {attempt} attempts)"
                        exc.args = (exc.message,)
                    raise
                logger.info(
                    "provider %s attempt %d failed (%s); retrying", self.name, attempt, exc.message
                )
                self._sleep(wait)
                continue
            provider_success(self.name)
            return reply

    def _timeout(self, request: ModelRequest) -> float:
        timeout = request.timeout_seconds
        if request.deadline is not None:
            timeout = min(timeout, max(request.deadline - time.monotonic(), 0.05))
        return timeout

    def _scrub(self, text: str) -> str:
        text = text[:300]
        if self._key:
            text = text.replace(self._key, "[key]")
        return mask_text(text)

    def _once(self, request: ModelRequest) -> ModelReply:
        body = {
            "model": request.model,
            "messages": [dict(message) for message in request.messages],
            "max_tokens": request.max_output_tokens,
            "temperature": 0,
        }
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        timeout = self._timeout(request)
        try:
            response = _pool.request(
                "POST",
                self.url,
                body=json.dumps(body).encode(),
                headers=headers,
                timeout=urllib3.Timeout(connect=min(timeout, 5.0), read=timeout),
                preload_content=True,
            )
        except urllib3.exceptions.TimeoutError:
            raise ProviderError(f"timed out after {timeout:g}s", transient=True) from None
        except urllib3.exceptions.HTTPError as exc:
            raise ProviderError(
                f"connection failed: {type(exc).__name__}", transient=True
            ) from None
        status = response.status
        if status >= 400:
            detail = self._error_detail(response.data)
            transient = status >= 500 or status in TRANSIENT_STATUSES
            raise ProviderError(
                f"answered {status}" + (f": {detail}" if detail else ""),
                transient=transient,
                status=status,
            )
        return self._reply(response.data, status, request)

    def _error_detail(self, raw: bytes) -> str:
        try:
            data = json.loads(raw or b"null")
        except (json.JSONDecodeError, UnicodeDecodeError):
            return ""
        if isinstance(data, dict):
            error = data.get("error")
            if isinstance(error, dict):
                error = error.get("message")
            if isinstance(error, str):
                return self._scrub(error)
        return ""

    def _reply(self, raw: bytes, status: int, request: ModelRequest) -> ModelReply:
        try:
            data = json.loads(raw)
            message = data["choices"][0]["message"]
            text = message.get("content") or ""
            usage = data.get("usage")
            if isinstance(usage, dict) and "prompt_tokens" in usage:
                input_tokens = int(usage.get("prompt_tokens") or 0)
                output_tokens = int(usage.get("completion_tokens") or 0)
            else:
                # A server that reports no usage is priced on an estimate rather than as free.
                prompt = "\n".join(m["content"] for m in request.messages)
                input_tokens = estimate_tokens(prompt)
                output_tokens = estimate_tokens(text) if isinstance(text, str) else 0
        except (
            json.JSONDecodeError,
            UnicodeDecodeError,
            KeyError,
            IndexError,
            TypeError,
            AttributeError,
            ValueError,
        ):
            raise ProviderError(
                f"answered {status} without a chat completion (choices[0].message.content)",
                transient=False,
                status=status,
            ) from None
        if not isinstance(text, str) or input_tokens < 0 or output_tokens < 0:
            raise ProviderError(
                f"answered {status} with a malformed completion", transient=False, status=status
            )
        parsed, confidence = parse_answer(text)
        return ModelReply(
            text=text,
            input_tokens=input_tokens,
            output_tokens=output_tokens,
            confidence=confidence,
            data=parsed,
        )
