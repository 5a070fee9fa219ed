"""The `openai` provider against a real local server speaking the chat-completions protocol:
usage fields, error statuses, retries, timeouts, the circuit breaker, and the key kept secret."""

from __future__ import annotations

import logging

import pytest

from apps.runtime.models import ProviderCircuit
from apps.runtime.providers import ModelRequest, ProviderError, ProviderUnavailable
from apps.runtime.providers.openai import OpenAIProvider
from tests.runtime.fake_openai import FakeOpenAI, Reply

pytestmark = pytest.mark.django_db

KEY = "sk-test-0123456789abcdef"


def provider(fake: FakeOpenAI, *, retries: int = 1, threshold: int = 5) -> OpenAIProvider:
    return OpenAIProvider(
        name="openai",
        base_url=fake.base_url,
        api_key=KEY,
        max_retries=retries,
        breaker_threshold=threshold,
        breaker_cooldown_seconds=60,
        sleep=lambda seconds: None,
    )


def request(timeout: float = 30.0) -> ModelRequest:
    return ModelRequest(
        task="classify_request",
        tier="small",
        model="gpt-4o-mini",
        messages=(
            {"role": "system", "content": "Answer in JSON."},
            {"role": "user", "content": "hi"},
        ),
        max_output_tokens=64,
        timeout_seconds=timeout,
    )


def test_complete__answer_with_usage__text_tokens_and_confidence(fake_openai: FakeOpenAI) -> None:
    # Given a server that answers a JSON object with a confidence, and reports usage
    fake_openai.script = [
        Reply(content='```json\n{"intent": "refund", "confidence": 0.83}\n```',
              usage={"prompt_tokens": 41, "completion_tokens": 9})
    ]  # fmt: skip
    # When the provider asks it
    reply = provider(fake_openai).complete(request())
    # Then the answer, its usage and its confidence come back
    assert reply.input_tokens == 41
    assert reply.output_tokens == 9
    assert reply.confidence == 0.83
    assert reply.data == {"intent": "refund", "confidence": 0.83}
    # And the request followed the protocol, with the key only in the Authorization header
    (seen,) = fake_openai.seen
    assert seen.path == "/v1/chat/completions"
    assert seen.headers["Authorization"] == f"Bearer {KEY}"
    assert seen.body["model"] == "gpt-4o-mini"
    assert seen.body["max_tokens"] == 64
    assert seen.body["messages"][1] == {"role": "user", "content": "hi"}


def test_complete__no_usage_reported__priced_on_an_estimate(fake_openai: FakeOpenAI) -> None:
    fake_openai.script = [Reply(content="a plain answer", usage=None)]
    reply = provider(fake_openai).complete(request())
    assert reply.input_tokens > 0
    assert reply.output_tokens > 0
    assert reply.confidence is None


def test_complete__server_error_then_answer__retried(fake_openai: FakeOpenAI) -> None:
    fake_openai.script = [Reply(status=503, content="overloaded"), Reply(content="fine")]
    reply = provider(fake_openai, retries=1).complete(request())
    assert reply.text == "fine"
    assert len(fake_openai.seen) == 2
    assert ProviderCircuit.objects.get(provider="openai").consecutive_failures == 0


def test_complete__429_past_retries__transient_error(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Reply(status=429, content="rate limited")
    with pytest.raises(ProviderError) as caught:
        provider(fake_openai, retries=2).complete(request())
    assert caught.value.transient
    assert caught.value.status == 429
    assert "answered 429: rate limited (after 3 attempts)" in caught.value.message
    assert len(fake_openai.seen) == 3


def test_complete__bad_request__permanent_not_retried_not_counted(
    fake_openai: FakeOpenAI,
) -> None:
    fake_openai.default = Reply(status=404, content="model 'gpt-4o-mini' not found")
    with pytest.raises(ProviderError) as caught:
        provider(fake_openai, retries=3).complete(request())
    assert not caught.value.transient
    assert len(fake_openai.seen) == 1
    assert not ProviderCircuit.objects.filter(
        provider="openai", consecutive_failures__gt=0
    ).exists()


def test_complete__slow_answer__times_out(fake_openai: FakeOpenAI) -> None:
    # Given a server that takes longer than the call's timeout
    fake_openai.default = Reply(delay=1.5)
    # When the provider calls it with a 0.3 s timeout and no retry
    with pytest.raises(ProviderError) as caught:
        provider(fake_openai, retries=0).complete(request(timeout=0.3))
    # Then the call fails as a transient timeout
    assert caught.value.transient
    assert "timed out after 0.3s" in caught.value.message


def test_complete__malformed_body__permanent(fake_openai: FakeOpenAI) -> None:
    fake_openai.default = Reply(raw=b'{"object": "list", "data": []}')
    with pytest.raises(ProviderError, match=r"without a chat completion") as caught:
        provider(fake_openai).complete(request())
    assert not caught.value.transient


def test_breaker__opens_after_threshold__refuses_without_calling(fake_openai: FakeOpenAI) -> None:
    # Given a provider that keeps failing and a threshold of two failures
    fake_openai.default = Reply(status=500, content="boom")
    failing = provider(fake_openai, retries=0, threshold=2)
    for _ in range(2):
        with pytest.raises(ProviderError):
            failing.complete(request())
    assert ProviderCircuit.objects.get(provider="openai").state == "open"
    calls = len(fake_openai.seen)
    # When another call is made
    with pytest.raises(ProviderUnavailable, match="openai is failing, calls are paused"):
        failing.complete(request())
    # Then it never reached the provider
    assert len(fake_openai.seen) == calls


def test_key__never_in_errors_or_logs(
    fake_openai: FakeOpenAI, caplog: pytest.LogCaptureFixture
) -> None:
    # Given a provider that echoes the key back in its error message
    fake_openai.default = Reply(status=401, content=f"Incorrect API key provided: {KEY}")
    caplog.set_level(logging.DEBUG)
    # When a call fails with it
    with pytest.raises(ProviderError) as caught:
        provider(fake_openai).complete(request())
    # Then neither the error nor any log line carries the key
    assert KEY not in caught.value.message
    assert "[key]" in caught.value.message
    assert KEY not in caplog.text
    assert KEY not in repr(provider(fake_openai))
