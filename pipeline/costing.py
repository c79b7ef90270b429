"""Costing: an editable price table turns a call's token usage into cost_usd."""

from __future__ import annotations

import json
from dataclasses import dataclass
from decimal import Decimal
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from pipeline.domain import Usage
from pipeline.errors import ErrorCategory, PermanentError

_MILLION = Decimal(1_000_000)
_CENT_FRACTION = Decimal("0.00000001")


class ModelPrice(BaseModel):
    """USD per million tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    input: Decimal
    output: Decimal
    cache_write: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)
    batch_discount: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class PriceTable:
    prices: dict[str, ModelPrice]
    read_on: str | None = None

    def price_for(self, provider: str, model: str) -> ModelPrice | None:
        """Longest key that prefixes `model` or `provider:model`; None when unpriced."""
        candidates = (model, f"{provider}:{model}")
        best: tuple[int, ModelPrice] | None = None
        for key, price in self.prices.items():
            if any(c.startswith(key) for c in candidates) and (best is None or len(key) > best[0]):
                best = (len(key), price)
        return best[1] if best else None

    def cost(self, provider: str, model: str, usage: Usage) -> Decimal | None:
        """Cost of one call; None when the model has no price (shown as unpriced, never as 0)."""
        price = self.price_for(provider, model)
        if price is None:
            return None
        total = (
            usage.input_tokens * price.input
            + usage.output_tokens * price.output
            + usage.cache_creation_input_tokens * price.cache_write
            + usage.cache_read_input_tokens * price.cache_read
        ) / _MILLION
        if usage.service_tier == "batch":
            total *= price.batch_discount
        return total.quantize(_CENT_FRACTION)


def load_price_table(path: Path | None = None) -> PriceTable:
    """The shipped defaults, or the user's own table (same JSON shape) when a path is given."""
    try:
        if path is None:
            raw = resources.files("pipeline.data").joinpath("prices.json").read_text("utf-8")
        else:
            raw = path.read_text("utf-8")
        doc = json.loads(raw)
        prices = {name: ModelPrice(**spec) for name, spec in doc["models"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = path or "the shipped price table"
        raise PermanentError(
            ErrorCategory.CONFIGURATION, f"cannot read price table {where}: {exc}"
        ) from None
    return PriceTable(prices=prices, read_on=doc.get("read_on"))
