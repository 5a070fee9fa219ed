"""The structured parts of a Decision Book (stored as JSON), with their validation."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Zone = Literal["green", "yellow", "red"]
Tier = Literal["deterministic", "small", "frontier", "human"]


class ToolRule(BaseModel):
    """A tool the workflow may use, its risk zone in this workflow and its amount caps (minor
    units): up to `auto_cap` it may run without review, above `hard_cap` it is never allowed."""

    model_config = ConfigDict(extra="forbid")

    tool: str = Field(min_length=1)
    risk_zone: Zone = "yellow"
    auto_cap: int | None = Field(default=None, ge=0)
    hard_cap: int | None = Field(default=None, ge=0)

    @model_validator(mode="after")
    def _caps_in_order(self) -> ToolRule:
        if (
            self.auto_cap is not None
            and self.hard_cap is not None
            and self.auto_cap > self.hard_cap
        ):
            raise ValueError(f"{self.tool}: the review-free cap must not exceed the hard cap")
        return self


class DataSource(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    freshness_minutes: int | None = Field(default=None, ge=0)


class Slos(BaseModel):
    model_config = ConfigDict(extra="forbid")

    step_latency_p95_ms: int | None = Field(default=None, ge=1)
    min_approval_rate: float | None = Field(default=None, ge=0, le=1)
    max_override_rate: float | None = Field(default=None, ge=0, le=1)
    max_human_in_loop_rate: float | None = Field(default=None, ge=0, le=1)


class ModelRoute(BaseModel):
    """Per task type: the tier to use first, and when to go one tier up."""

    model_config = ConfigDict(extra="forbid")

    tier: Tier
    escalate_below_confidence: float | None = Field(default=None, ge=0, le=1)
    escalate_on_pii: bool = True
