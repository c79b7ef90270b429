"""Price table and cost arithmetic. The arithmetic is checked against a table of the test's own
with figures worked out by hand, not against the shipped table's numbers."""

from __future__ import annotations

import json
from datetime import UTC, datetime
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


def _history_table(tmp_path: Path) -> Path:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "m": [
                        {
                            "from": "2026-01-01",
                            "input": "2",
                            "output": "10",
                            "batch_discount": "0.5",
                        },
                        {
                            "from": "2026-07-01",
                            "input": "1",
                            "output": "5",
                            "batch_discount": "0.5",
                        },
                    ]
                }
            }
        )
    )
    return path


def test_a_call_is_priced_with_the_price_in_force_when_it_ran(tmp_path: Path) -> None:
    table = load_price_table(_history_table(tmp_path))
    usage = Usage(input_tokens=1_000_000, output_tokens=100_000)
    june = datetime(2026, 6, 30, 23, 59, tzinfo=UTC)
    july = datetime(2026, 7, 1, 0, 0, tzinfo=UTC)
    assert table.cost("p", "m", usage, june) == Decimal("3")  # 2 + 0.1 * 10
    assert table.cost("p", "m", usage, july) == Decimal("1.5")  # 1 + 0.1 * 5
    # Before the first entry the model had no price: unpriced, never free.
    assert table.cost("p", "m", usage, datetime(2025, 12, 31, tzinfo=UTC)) is None


def test_history_prices_each_token_kind_and_the_batch_discount_separately(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(
        json.dumps(
            {
                "models": {
                    "m": [
                        {
                            "from": "2026-01-01",
                            "input": "1",
                            "output": "2",
                            "cache_write": "4",
                            "cache_read": "8",
                            "batch_discount": "0.5",
                        },
                    ]
                }
            }
        )
    )
    table = load_price_table(path)
    at = datetime(2026, 3, 1, tzinfo=UTC)
    million = 1_000_000
    assert table.cost("p", "m", Usage(input_tokens=million), at) == 1
    assert table.cost("p", "m", Usage(output_tokens=million), at) == 2
    assert table.cost("p", "m", Usage(cache_creation_input_tokens=million), at) == 4
    assert table.cost("p", "m", Usage(cache_read_input_tokens=million), at) == 8
    batch = Usage(input_tokens=million, output_tokens=million, service_tier="batch")
    assert table.cost("p", "m", batch, at) == Decimal("1.5")


def test_two_prices_taking_effect_on_the_same_day_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    entry = {"from": "2026-01-01", "input": "1", "output": "2"}
    path.write_text(json.dumps({"models": {"m": [entry, entry]}}))
    with pytest.raises(PermanentError) as info:
        load_price_table(path)
    assert "same date" in info.value.message
