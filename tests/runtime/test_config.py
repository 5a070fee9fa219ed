"""The model provider's configuration: defaults, the openai provider, bad values."""

from __future__ import annotations

import pytest

from apps.runtime.config import demo_interval, model_settings
from controlplane.environment import ConfigurationError


def test_model_settings__nothing_set__deterministic() -> None:
    models = model_settings({})
    assert models.provider == "deterministic"
    assert models.max_retries == 2


def test_model_settings__openai__reads_everything_and_hides_the_key() -> None:
    models = model_settings(
        {
            "MODEL_PROVIDER": "openai",
            "MODEL_BASE_URL": "http://127.0.0.1:11434/v1/",
            "MODEL_API_KEY": "sk-secret-value",
            "MODEL_SMALL": "llama-3.1-8b-instruct",
            "MODEL_TIMEOUT": "7.5",
        }
    )
    assert models.base_url == "http://127.0.0.1:11434/v1"
    assert models.frontier_model == "llama-3.1-8b-instruct"  # defaults to the small one
    assert models.timeout_seconds == 7.5
    assert "sk-secret-value" not in repr(models)


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"MODEL_PROVIDER": "anthropic"}, "MODEL_PROVIDER: expected one of deterministic, openai"),
        ({"MODEL_PROVIDER": "openai", "MODEL_SMALL": "m"}, "MODEL_BASE_URL: required"),
        (
            {"MODEL_PROVIDER": "openai", "MODEL_BASE_URL": "ftp://x", "MODEL_SMALL": "m"},
            "MODEL_BASE_URL: expected an http:// or https:// address",
        ),
        ({"MODEL_PROVIDER": "openai", "MODEL_BASE_URL": "http://x"}, "MODEL_SMALL: required"),
        ({"MODEL_TIMEOUT": "0"}, "MODEL_TIMEOUT: must be a positive number"),
        ({"MODEL_MAX_RETRIES": "many"}, "MODEL_MAX_RETRIES: expected a whole number"),
        ({"MODEL_MAX_RETRIES": "-1"}, "MODEL_MAX_RETRIES: must be at least 0"),
    ],
)
def test_model_settings__bad_value__names_the_variable(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        model_settings(env)


def test_demo_interval__must_be_positive() -> None:
    assert demo_interval({"DEMO_TRAFFIC_INTERVAL": "2.5"}) == 2.5
    with pytest.raises(ConfigurationError, match="DEMO_TRAFFIC_INTERVAL"):
        demo_interval({"DEMO_TRAFFIC_INTERVAL": "-1"})
