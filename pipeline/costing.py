"""Costing: a price table with history turns a call's token usage into cost_usd.

Each model has one or more price entries, each in force from its `from` date (UTC) until the
next one; a call is priced with the entry in force when it ran, so editing the table for a
price change never re-prices old calls. Input, output, cache-write and cache-read tokens are
priced separately, and batch-tier calls get the entry's batch discount.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from pipeline.domain import Usage
from pipeline.errors import ErrorCategory, PermanentError

_MILLION = Decimal(1_000_000)
_CENT_FRACTION = Decimal("0.00000001")
BATCH_TIER = "batch"


class ModelPrice(BaseModel):
    """USD per million tokens, in force from `effective_from` (None: from the beginning)."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    effective_from: date | None = Field(default=None, alias="from")
    input: Decimal
    output: Decimal
    cache_write: Decimal = Decimal(0)
    cache_read: Decimal = Decimal(0)
    batch_discount: Decimal = Decimal(1)  # multiplies every price of a batch-tier call
    # The shortest prefix the provider caches; a marked prefix below it is silently not cached.
    # None: the model has no explicit prompt caching.
    min_cache_tokens: int | None = None

    def cost(self, usage: Usage) -> Decimal:
        total = (
            usage.input_tokens * self.input
            + usage.output_tokens * self.output
            + usage.cache_creation_input_tokens * self.cache_write
            + usage.cache_read_input_tokens * self.cache_read
        ) / _MILLION
        if usage.service_tier == BATCH_TIER:
            total *= self.batch_discount
        return total.quantize(_CENT_FRACTION)


@dataclass(frozen=True, slots=True)
class PriceTable:
    """Price history per model key: a key matches every model id it prefixes (`claude-haiku-4-5`
    matches `claude-haiku-4-5-20251001`), or `provider:` + a model id prefix."""

    prices: Mapping[str, ModelPrice | list[ModelPrice]]
    read_on: str | None = None
    _history: dict[str, list[ModelPrice]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        history = {
            key: sorted(
                value if isinstance(value, list) else [value],
                key=lambda p: p.effective_from or date.min,
            )
            for key, value in self.prices.items()
        }
        object.__setattr__(self, "_history", history)

    def price_for(self, provider: str, model: str, at: datetime | None = None) -> ModelPrice | None:
        """The entry in force at `at` (default: now) for the longest key that prefixes `model`
        or `provider:model`; None when unpriced (or when `at` is before its first entry)."""
        candidates = (model, f"{provider}:{model}")
        best_key: str | None = None
        for key in self._history:
            if any(c.startswith(key) for c in candidates) and (
                best_key is None or len(key) > len(best_key)
            ):
                best_key = key
        if best_key is None:
            return None
        day = (at or datetime.now(UTC)).astimezone(UTC).date()
        in_force = None
        for entry in self._history[best_key]:
            if entry.effective_from is None or entry.effective_from <= day:
                in_force = entry
        return in_force

    def cost(
        self, provider: str, model: str, usage: Usage, at: datetime | None = None
    ) -> Decimal | None:
        """Cost of one call; None when the model has no price (shown as unpriced, never as 0)."""
        price = self.price_for(provider, model, at)
        return None if price is None else price.cost(usage)

    def history(self) -> dict[str, list[ModelPrice]]:
        """Every key's entries, oldest first (for `pagemill prices`)."""
        return {key: list(entries) for key, entries in self._history.items()}


def _entries(name: str, spec: Any) -> ModelPrice | list[ModelPrice]:
    if isinstance(spec, list):
        entries = [ModelPrice(**item) for item in spec]
        dates = [e.effective_from for e in entries]
        if len(set(dates)) != len(dates):
            raise ValueError(f"{name}: two entries take effect on the same date")
        return entries
    return ModelPrice(**spec)


def load_price_table(path: Path | None = None) -> PriceTable:
    """The shipped defaults, or the user's own table (same JSON shape) when a path is given.

    A model's value is one price object (in force from the beginning) or a list of them, each
    with a `from` date (YYYY-MM-DD) on which it takes effect."""
    try:
        if path is None:
            raw = resources.files("pipeline.data").joinpath("prices.json").read_text("utf-8")
        else:
            raw = path.read_text("utf-8")
        doc = json.loads(raw)
        prices = {name: _entries(name, spec) for name, spec in doc["models"].items()}
    except (OSError, ValueError, KeyError, TypeError) as exc:
        where = path or "the shipped price table"
        raise PermanentError(
            ErrorCategory.CONFIGURATION, f"cannot read price table {where}: {exc}"
        ) from None
    return PriceTable(prices=prices, read_on=doc.get("read_on"))
