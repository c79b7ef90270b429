"""Price table and cost arithmetic."""

from __future__ import annotations

import json
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
