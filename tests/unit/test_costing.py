"""Price table and cost arithmetic. The arithmetic is checked against a table of the test's own
with figures worked out by hand, not against the shipped table's numbers."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.costing import PriceTable, load_price_table
from pipeline.domain import Usage
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.settings import load_settings


@pytest.fixture
def table(tmp_path: Path) -> PriceTable:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "model-a": {
                        "input": "2",
                        "output": "10",
                        "cache_write": "2.5",
                        "cache_read": "0.2",
                        "batch_discount": "0.5",
                    },
                    "model-a-large": {"input": "4", "output": "20"},
                    "selfhosted:": {"input": "0", "output": "0"},
                }
            }
        )
    )
    return load_price_table(path)


def test_every_kind_of_token_at_its_own_price(table: PriceTable) -> None:
    usage = Usage(
        input_tokens=1_000,
        output_tokens=500,
        cache_creation_input_tokens=2_000,
        cache_read_input_tokens=10_000,
    )
    # 1000 x 2 + 500 x 10 + 2000 x 2.5 + 10000 x 0.2 = 14,000 per million tokens
    assert table.cost("anthropic", "model-a", usage) == Decimal("0.014")


def test_a_dated_id_takes_its_alias_price_and_batch_calls_are_discounted(
    table: PriceTable,
) -> None:
    usage = Usage(input_tokens=1_000_000, service_tier="batch")
    assert table.cost("anthropic", "model-a-20260101", usage) == Decimal("1")  # 2 x 0.5
    # The longest matching id wins: model-a-large is not model-a.
    assert table.cost("anthropic", "model-a-large", Usage(output_tokens=1_000_000)) == 20


def test_a_provider_wide_price_and_an_unknown_model(table: PriceTable) -> None:
    usage = Usage(input_tokens=5_000, output_tokens=100)
    assert table.cost("selfhosted", "any-model", usage) == 0
    assert table.cost("anthropic", "model-b", usage) is None  # unpriced, never 0


def test_the_shipped_table_prices_the_default_models() -> None:
    # A default model missing from the table would make every call unpriced.
    table = load_price_table()
    settings = load_settings()
    usage = Usage(input_tokens=1_000_000, output_tokens=1_000_000)
    anthropic = table.cost("anthropic", settings.anthropic_model, usage)
    assert anthropic is not None and anthropic > 0
    # The offline extractor and self-hosted servers are free to call, yet still rows.
    assert table.cost("local", "local-rules-1", usage) == 0
    assert table.cost("openai_compat", settings.openai_model, usage) == 0
    assert table.read_on  # the date the prices were read, for whoever edits them


def test_broken_price_table_is_a_configuration_error(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text("{not json")
    with pytest.raises(PermanentError) as info:
        load_price_table(path)
    assert info.value.category is ErrorCategory.CONFIGURATION
