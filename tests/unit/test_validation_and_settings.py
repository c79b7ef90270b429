"""Schema validation, the retry policy and settings that fail fast."""

from __future__ import annotations

import pytest

from pipeline.errors import ErrorCategory, PermanentError, TransientError
from pipeline.retry import RetryPolicy
from pipeline.schemas import get_schema
from pipeline.settings import SettingsError, load_settings
from pipeline.validation import feedback_for, validate

INVOICE = get_schema("invoice")


def test_valid_invoice_normalises_types() -> None:
    checked = validate(
        INVOICE,
        {
            "invoice_number": " F-1 ",
            "invoice_date": "2026-02-17",
            "currency": "eur",
            "total": "681.87",
            "line_items": [{"description": "Chair", "quantity": 3, "amount": "573.00"}],
        },
    )
    assert checked.ok
    data = checked.data()
    assert data["invoice_number"] == "F-1"
    assert data["currency"] == "EUR"
    assert data["total"] == "681.87"
    assert data["line_items"][0]["quantity"] == "3"


def test_invalid_output_lists_every_problem() -> None:
    checked = validate(
        INVOICE, {"invoice_date": "17th of Feb", "currency": "EURO", "total": "lots", "bogus": 1}
    )
    assert not checked.ok
    joined = " | ".join(checked.errors)
    for field in ("invoice_date", "currency", "total", "bogus"):
        assert field in joined
    assert "previous answer did not validate" in feedback_for(checked.errors)


def test_no_output_is_an_error_not_an_empty_result() -> None:
    checked = validate(INVOICE, None)
    assert not checked.ok and checked.errors


def test_unknown_schema() -> None:
    with pytest.raises(PermanentError) as info:
        get_schema("passport")
    assert info.value.category is ErrorCategory.CONFIGURATION


def test_retry_policy_honours_retry_after_up_to_the_cap() -> None:
    policy = RetryPolicy(max_retries=3, base_s=1, cap_s=30)
    assert policy.delay_s(0, retry_after_s=12) >= 12
    assert policy.delay_s(0, retry_after_s=90) == 30
    assert all(policy.delay_s(n) <= 30 for n in range(10))
    error = TransientError(ErrorCategory.PROVIDER_RATE_LIMITED, "429")
    assert policy.should_retry(error, 2)
    assert not policy.should_retry(error, 3)
    assert not policy.should_retry(PermanentError(ErrorCategory.BAD_INPUT, "x"), 0)


def test_settings_fail_fast_with_the_variable_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAGEMILL_MAX_PAGES", "lots")
    with pytest.raises(SettingsError) as info:
        load_settings()
    assert "PAGEMILL_MAX_PAGES" in str(info.value)


def test_settings_reject_a_visibility_timeout_shorter_than_a_task() -> None:
    with pytest.raises(SettingsError) as info:
        load_settings(visibility_timeout_s=600, task_time_limit_s=900)
    assert "visibility_timeout_s" in str(info.value)


def test_default_provider_is_local_without_a_key() -> None:
    assert load_settings().default_provider == "local"
    assert load_settings(anthropic_api_key="sk-test").default_provider == "anthropic"
