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


class PriceUnknown(Exception):
    """No one price for a model: none at all, none at the provider named, or several providers
    and none named. `field` is the one to fix ("usage.model" or "usage.provider")."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def price_require(provider: str, model: str) -> Price:
    """The one price of `model` (at `provider`, when named), or PriceUnknown saying why not."""
    rows = list(ModelPrice.objects.filter(model=model).order_by("provider")[:20])
    providers = [row.provider for row in rows]
    if provider:
        rows = [row for row in rows if row.provider == provider]
    if not rows and not providers:
        raise PriceUnknown(
            "usage.model",
            f"{model!r} has no price in the model price table; report a priced model, or ask "
            "an admin to add its price",
        )
    if not rows:
        raise PriceUnknown(
            "usage.provider",
            f"{model!r} is not priced at {provider!r}; it is priced at {', '.join(providers)}",
        )
    if len(rows) > 1:
        raise PriceUnknown(
            "usage.provider",
            f"{model!r} is priced at several providers ({', '.join(providers)}); name one",
        )
    row = rows[0]
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
