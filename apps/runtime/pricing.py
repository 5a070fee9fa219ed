"""What a model call costs, from the model price table (price per 1,000 tokens, in and out)."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal

from apps.registry.models import ModelPrice

MICRO = Decimal("0.000001")
THOUSAND = Decimal(1000)
HUNDRED = Decimal(100)


@dataclass(frozen=True)
class Price:
    provider: str
    model: str
    input_per_1k: Decimal
    output_per_1k: Decimal
    currency: str


def price_find(provider: str, model: str) -> Price | None:
    """The price of `model` at `provider`; with no provider named, the model's only price."""
    rows = ModelPrice.objects.filter(model=model)
    if provider:
        rows = rows.filter(provider=provider)
    found = list(rows[:2])
    if len(found) != 1:
        return None
    row = found[0]
    return Price(row.provider, row.model, row.input_per_1k, row.output_per_1k, row.currency)


def cost_cents(price: Price | None, input_tokens: int, output_tokens: int) -> Decimal:
    """Cost in minor units (cents) to six decimal places; zero when the model has no price."""
    if price is None:
        return Decimal(0)
    units = (
        Decimal(input_tokens) * price.input_per_1k + Decimal(output_tokens) * price.output_per_1k
    ) / THOUSAND
    return (units * HUNDRED).quantize(MICRO, rounding=ROUND_HALF_UP)


def estimate_tokens(text: str) -> int:
    """A deliberately generous token estimate (about 3 characters a token; real tokenisers
    average nearer 4 for English), used to reserve budget before a call and to count the
    tokens of deterministic stand-ins."""
    return max(1, -(-len(text) // 3))
