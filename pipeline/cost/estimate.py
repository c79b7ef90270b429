"""Estimates made before a call: input tokens by Anthropic's image rule plus text and schema,
output tokens from what the same schema and model needed lately, and the money."""

from __future__ import annotations

import json
import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from pipeline.costing import BATCH_TIER, PriceTable
from pipeline.domain import PageContent, Usage
from pipeline.schemas import SchemaSpec

# Anthropic: an image costs about width * height / 750 tokens, after it has been scaled down
# (keeping its aspect ratio) to a long edge of at most 1568 px and at most ~1,600 tokens.
PIXELS_PER_TOKEN = 750
MAX_LONG_EDGE_PX = 1568
MAX_IMAGE_TOKENS = 1600
CHARS_PER_TOKEN = 4
# The extractors' fixed wording around the schema (system preamble, tool description, the
# closing instruction), in tokens: small, and the same for every call.
PROMPT_OVERHEAD_TOKENS = 200
DEFAULT_OUTPUT_TOKENS = 600  # until this process has seen the schema and model answer


def image_tokens(width: int, height: int) -> int:
    """Tokens of one image by the provider's rule (after its own downscaling)."""
    if width <= 0 or height <= 0:
        return 0
    scale = min(
        1.0,
        MAX_LONG_EDGE_PX / max(width, height),
        math.sqrt(MAX_IMAGE_TOKENS * PIXELS_PER_TOKEN / (width * height)),
    )
    return math.ceil(int(width * scale) * int(height * scale) / PIXELS_PER_TOKEN)


def text_tokens(text: str) -> int:
    return math.ceil(len(text) / CHARS_PER_TOKEN)


def prefix_tokens(schema: SchemaSpec) -> int:
    """The fixed part of every request for this schema (instructions and JSON schema): what a
    prompt cache would hold."""
    schema_json = json.dumps(schema.json_schema())
    return PROMPT_OVERHEAD_TOKENS + text_tokens(schema.instructions) + text_tokens(schema_json)


def input_tokens(schema: SchemaSpec, pages: Sequence[PageContent], feedback: str | None) -> int:
    tokens = prefix_tokens(schema) + text_tokens(feedback or "")
    for page in pages:
        tokens += image_tokens(page.pixel_width, page.pixel_height)
        if page.has_text_layer:
            tokens += text_tokens(page.text) + 8  # the "Text layer of page N:" label
    return tokens


@dataclass(frozen=True, slots=True)
class Estimate:
    input_tokens: int
    output_tokens: int
    cost_usd: Decimal | None  # None: the model has no price

    @property
    def tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Estimator:
    """Estimates per call; learns typical output sizes per (model, schema) as answers come in.
    One per process, shared by its threads."""

    def __init__(self, prices: PriceTable, default_output_tokens: int = DEFAULT_OUTPUT_TOKENS):
        self.prices = prices
        self._default_output = default_output_tokens
        self._output: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()

    def output_tokens(self, model: str, schema: SchemaSpec, max_tokens: int | None) -> int:
        with self._lock:
            seen = self._output.get((model, schema.name))
        guess = math.ceil(seen) if seen is not None else self._default_output
        return min(guess, max_tokens) if max_tokens else guess

    def learn(self, model: str, schema: SchemaSpec, output_tokens: int) -> None:
        """An exponential moving average: recent answers count most."""
        if output_tokens <= 0:
            return
        with self._lock:
            key = (model, schema.name)
            old = self._output.get(key)
            self._output[key] = output_tokens if old is None else 0.8 * old + 0.2 * output_tokens

    def estimate(
        self,
        provider: str,
        model: str,
        schema: SchemaSpec,
        pages: Sequence[PageContent],
        *,
        feedback: str | None = None,
        max_tokens: int | None = None,
        batch: bool = False,
        at: datetime | None = None,
    ) -> Estimate:
        tokens_in = input_tokens(schema, pages, feedback)
        tokens_out = self.output_tokens(model, schema, max_tokens)
        usage = Usage(
            input_tokens=tokens_in,
            output_tokens=tokens_out,
            service_tier=BATCH_TIER if batch else None,
        )
        return Estimate(tokens_in, tokens_out, self.prices.cost(provider, model, usage, at))
