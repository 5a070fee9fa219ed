"""The runtime's configuration, read from the environment by settings.py (pure functions, no
Django imports, so that settings can call them and tests can check them directly)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from controlplane.environment import ConfigurationError, env_float

PROVIDERS = ("deterministic", "openai")


@dataclass(frozen=True)
class ModelSettings:
    """Which provider serves the small and frontier tiers, and how to reach it.

    The key is kept out of repr() so that it never shows in a debug page or a log line."""

    provider: str = "deterministic"
    base_url: str = ""
    api_key: str = field(default="", repr=False)
    small_model: str = ""
    frontier_model: str = ""
    price_provider: str = "openai"
    timeout_seconds: float = 30.0
    max_retries: int = 2
    max_output_tokens: int = 512
    breaker_threshold: int = 5
    breaker_cooldown_seconds: float = 60.0


def _env_int(env: Mapping[str, str], name: str, default: int, minimum: int) -> int:
    raw = env.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise ConfigurationError(f"{name}: expected a whole number, got {raw!r}") from None
    if value < minimum:
        raise ConfigurationError(f"{name}: must be at least {minimum}, got {value}")
    return value


def _env_positive(env: Mapping[str, str], name: str, default: float) -> float:
    value = env_float(env, name, default)
    if value <= 0:
        raise ConfigurationError(f"{name}: must be a positive number of seconds, got {value:g}")
    return value


def model_settings(env: Mapping[str, str]) -> ModelSettings:
    provider = env.get("MODEL_PROVIDER", "deterministic").strip().lower() or "deterministic"
    if provider not in PROVIDERS:
        raise ConfigurationError(
            f"MODEL_PROVIDER: expected one of {', '.join(PROVIDERS)}, got {provider!r}"
        )
    base_url = env.get("MODEL_BASE_URL", "").strip().rstrip("/")
    small = env.get("MODEL_SMALL", "").strip()
    frontier = env.get("MODEL_FRONTIER", "").strip() or small
    if provider == "openai":
        if not base_url:
            raise ConfigurationError(
                "MODEL_BASE_URL: required when MODEL_PROVIDER=openai "
                "(e.g. http://127.0.0.1:11434/v1)"
            )
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigurationError(
                f"MODEL_BASE_URL: expected an http:// or https:// address, got {base_url!r}"
            )
        if not small:
            raise ConfigurationError("MODEL_SMALL: required when MODEL_PROVIDER=openai")
    return ModelSettings(
        provider=provider,
        base_url=base_url,
        api_key=env.get("MODEL_API_KEY", "").strip(),
        small_model=small,
        frontier_model=frontier,
        price_provider=env.get("MODEL_PRICE_PROVIDER", "openai").strip() or "openai",
        timeout_seconds=_env_positive(env, "MODEL_TIMEOUT", 30.0),
        max_retries=_env_int(env, "MODEL_MAX_RETRIES", 2, minimum=0),
        max_output_tokens=_env_int(env, "MODEL_MAX_OUTPUT_TOKENS", 512, minimum=1),
        breaker_threshold=_env_int(env, "MODEL_BREAKER_THRESHOLD", 5, minimum=1),
        breaker_cooldown_seconds=_env_positive(env, "MODEL_BREAKER_COOLDOWN", 60.0),
    )


def demo_interval(env: Mapping[str, str]) -> float:
    """Seconds between two picks of demo work (DEMO_TRAFFIC_INTERVAL)."""
    return _env_positive(env, "DEMO_TRAFFIC_INTERVAL", 10.0)
