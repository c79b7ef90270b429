"""Which SDK a worker imports at start for each provider (the warm-up itself runs on real
worker processes: tests/integration/test_worker_warmup.py)."""

from __future__ import annotations

from pipeline.extractors import sdk_module


def test_each_remote_provider_names_the_sdk_a_worker_imports_at_start() -> None:
    assert sdk_module("anthropic") == "anthropic"
    assert sdk_module("openai_compat") == "openai"
    assert sdk_module("local") is None  # nothing slow to import
