"""Price table and cost arithmetic."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from pipeline.costing import load_price_table
from pipeline.domain import Usage
from pipeline.errors import ErrorCategory, PermanentError


def test_shipped_sonnet_price_with_cache_tokens() -> None:
    table = load_price_table()
    usage = Usage(
        input_tokens=1_000,
        output_tokens=500,
        cache_creation_input_tokens=2_000,
        cache_read_input_tokens=10_000,
    )
    # 1000*3 + 500*15 + 2000*3.75 + 10000*0.30 = 3000 + 7500 + 7500 + 3000 = 21000 per million
    assert table.cost("anthropic", "claude-sonnet-4-6", usage) == Decimal("0.021")


def test_dated_model_id_matches_its_alias_and_batch_is_discounted() -> None:
    table = load_price_table()
    usage = Usage(input_tokens=1_000_000, service_tier="batch")
    assert table.cost("anthropic", "claude-haiku-4-5-20251001", usage) == Decimal("0.5")


def test_local_and_self_hosted_cost_zero_but_unknown_models_are_unpriced() -> None:
    table = load_price_table()
    usage = Usage(input_tokens=5_000, output_tokens=100)
    assert table.cost("local", "local-rules-1", usage) == 0
    assert table.cost("openai_compat", "Qwen/Qwen2-VL-7B-Instruct", usage) == 0
    assert table.cost("anthropic", "claude-unknown-9", usage) is None


def test_user_price_table(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps({"models": {"my-model": {"input": "2", "output": "4"}}}))
    table = load_price_table(path)
    assert table.cost("x", "my-model", Usage(input_tokens=500_000, output_tokens=250_000)) == 2


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
