"""The Anthropic extractor driving the real SDK against the fake model server (no mocks)."""

from __future__ import annotations

import socket
from typing import Any

import pytest

from pipeline.domain import ExtractionRequest
from pipeline.errors import ErrorCategory, PermanentError, TransientError
from pipeline.extractors import anthropic as anthropic_extractor
from pipeline.extractors.anthropic import AnthropicExtractor
from pipeline.extractors.common import retry_after_seconds
from pipeline.schemas import get_schema
from pipeline.settings import Settings, load_settings
from tests.support.fake_model_fixtures import sample_page, sample_request
from tests.support.fake_model_server import FakeModelServer, drop_connection, error, reply

API_KEY = "sk-ant-test-0123456789abcdef"


def _settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "anthropic_api_key": API_KEY,
        "anthropic_base_url": base_url,
        "anthropic_model": "claude-test-model",
        "anthropic_max_tokens": 2048,
        "anthropic_timeout_s": 5.0,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def server(fake_model_server: FakeModelServer) -> FakeModelServer:
    return fake_model_server


@pytest.fixture(scope="module")
def extractor(fake_model_server_session: FakeModelServer) -> AnthropicExtractor:
    # One extractor (one SDK client, ~0.15 s to build) for the module's tests.
    return AnthropicExtractor(_settings(fake_model_server_session.anthropic_base_url))


def _request(**kwargs: Any) -> ExtractionRequest:
    return sample_request(**kwargs)


# --- success -----------------------------------------------------------------------------------


def test_success_returns_valid_data_usage_and_request_id(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    reply_ = extractor.call(_request())

    assert reply_.problem is None
    assert reply_.truncated is False
    assert reply_.stop_reason == "tool_use"
    assert reply_.data is not None
    invoice = get_schema("invoice").model.model_validate(reply_.data)
    assert invoice.model_dump()["invoice_number"] == "INV-2026-0042"
    assert reply_.usage.input_tokens > 0
    assert reply_.usage.output_tokens > 0
    assert reply_.usage.service_tier == "standard"
    assert server.request_count == 1
    recorded = server.last_request
    assert reply_.request_id == recorded.request_id
    assert recorded.auth == "bearer"
    assert recorded.headers["x-stainless-retry-count"] == "0"
    assert recorded.model == "claude-test-model"


def test_forced_tool_use_with_the_schema(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    extractor.call(_request())

    body = server.last_request.body
    assert body["tool_choice"] == {"type": "tool", "name": "record_invoice"}
    [tool] = body["tools"]
    assert tool["name"] == "record_invoice"
    assert tool["input_schema"] == get_schema("invoice").json_schema()
    assert tool["description"]
    assert get_schema("invoice").instructions in body["system"][0]["text"]


def test_pages_become_image_blocks_followed_by_their_text_layer(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    pages = [
        sample_page(0, text="ACME GmbH  Invoice INV-7  Total 178.50 EUR"),
        sample_page(1, text="   "),  # no usable text layer: scanned page
        sample_page(2, text="Page three words", media_type="image/png"),
    ]
    extractor.call(_request(pages=pages))

    recorded = server.last_request
    content = recorded.body["messages"][0]["content"]
    kinds = [block["type"] for block in content]
    assert kinds == ["image", "text", "image", "image", "text", "text"]
    assert content[0]["source"]["type"] == "base64"
    assert content[0]["source"]["media_type"] == "image/jpeg"
    assert content[1]["text"] == (
        "Text layer of page 1:\nACME GmbH  Invoice INV-7  Total 178.50 EUR"
    )
    assert content[3]["source"]["media_type"] == "image/png"
    assert content[4]["text"].startswith("Text layer of page 3:\n")
    assert "Text layer of page 2" not in recorded.prompt_text()
    assert "3 pages" in content[-1]["text"]
    assert [(w, h) for _, w, h in recorded.images()] == [(240, 340)] * 3


def test_cache_control_marks_system_and_tool_only_when_asked_and_caching_is_reported(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    plain = extractor.call(_request())
    assert server.last_request.cache_control_markers() == []
    assert plain.usage.cache_creation_input_tokens == plain.usage.cache_read_input_tokens == 0

    marked = _request()
    marked.cache_prefix = True
    first = extractor.call(marked)
    assert sorted(server.last_request.cache_control_markers()) == ["system[0]", "tools[0]"]
    second = extractor.call(marked)

    assert first.usage.cache_creation_input_tokens > 0
    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens == first.usage.cache_creation_input_tokens
    assert second.usage.total_input_tokens == first.usage.total_input_tokens


def test_max_tokens_from_request_else_settings(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    extractor.call(_request())
    assert server.last_request.max_tokens == 2048
    extractor.call(_request(max_tokens=777))
    assert server.last_request.max_tokens == 777


def test_reask_includes_the_validation_feedback(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    extractor.call(_request(feedback="currency: 'EURO' is not an ISO 4217 currency code"))

    last_text = server.last_request.body["messages"][0]["content"][-1]["text"]
    assert "Your previous answer failed validation: currency: 'EURO'" in last_text


def test_no_client_until_the_first_call(server: FakeModelServer) -> None:
    extractor = AnthropicExtractor(_settings(server.anthropic_base_url))
    assert extractor._client is None
    extractor.call(_request())
    assert extractor._client is not None
    assert API_KEY not in repr(extractor)


# --- HTTP errors ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("headers", "expected"),
    [({"retry_after": 7}, 7.0), ({"retry_after_ms": 1500, "retry_after": 30}, 1.5)],
)
def test_429_is_transient_rate_limited_with_retry_after_and_one_request(
    server: FakeModelServer,
    extractor: AnthropicExtractor,
    headers: dict[str, Any],
    expected: float,
) -> None:
    server.script(error(429, **headers))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    err = caught.value
    assert err.category is ErrorCategory.PROVIDER_RATE_LIMITED
    assert err.retry_after_s == pytest.approx(expected)
    assert err.request_id == server.last_request.request_id
    assert server.request_count == 1  # the SDK did not retry


def test_529_overloaded_is_transient_unavailable(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(error(529, retry_after=2))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE
    assert caught.value.retry_after_s == 2.0
    assert "overloaded_error" in caught.value.message
    assert server.request_count == 1


@pytest.mark.parametrize(
    ("status", "category", "transient"),
    [
        (400, ErrorCategory.PROVIDER_REJECTED, False),
        (401, ErrorCategory.PROVIDER_AUTH, False),
        (403, ErrorCategory.PROVIDER_AUTH, False),
        (404, ErrorCategory.PROVIDER_REJECTED, False),
        (408, ErrorCategory.PROVIDER_UNAVAILABLE, True),
        (409, ErrorCategory.PROVIDER_UNAVAILABLE, True),
        (413, ErrorCategory.PROVIDER_REJECTED, False),
        (422, ErrorCategory.PROVIDER_REJECTED, False),
        (500, ErrorCategory.PROVIDER_UNAVAILABLE, True),
        (503, ErrorCategory.PROVIDER_UNAVAILABLE, True),
    ],
)
def test_status_mapping(
    server: FakeModelServer,
    extractor: AnthropicExtractor,
    status: int,
    category: ErrorCategory,
    transient: bool,
) -> None:
    server.script(error(status))

    with pytest.raises(TransientError if transient else PermanentError) as caught:
        extractor.call(_request())

    assert caught.value.category is category
    assert caught.value.request_id == server.last_request.request_id
    assert server.request_count == 1


def test_x_should_retry_false_makes_a_500_permanent(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(error(500, should_retry=False))

    with pytest.raises(PermanentError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE
    assert caught.value.request_id == server.last_request.request_id


def test_x_should_retry_true_makes_a_400_transient(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(error(400, should_retry=True, retry_after=1))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.retry_after_s == 1.0


def test_spend_limit_429_is_permanent(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(error(429, error_code="enforced_spend_limit_reached"))

    with pytest.raises(PermanentError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_REJECTED


def test_error_messages_never_contain_the_api_key(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(error(401, message=f"invalid x-api-key {API_KEY}"))

    with pytest.raises(PermanentError) as caught:
        extractor.call(_request())

    assert API_KEY not in str(caught.value)
    assert "[redacted]" in caught.value.message


# --- completed calls without usable output -----------------------------------------------------


def test_max_tokens_stop_is_truncated(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(reply("max_tokens"))

    result = extractor.call(_request(max_tokens=300))

    assert result.truncated is True
    assert result.data is None
    assert result.stop_reason == "max_tokens"
    assert result.problem is not None and "max_tokens=300" in result.problem
    assert result.usage.output_tokens == 300
    assert result.request_id == server.last_request.request_id


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("no_usage", "no usage"),
        ("tool_use_without_input", "without input"),
        ("tool_use_input_not_object", "not an object"),
        ("no_tool_use", "no tool_use"),
        ("refusal", "refused"),
        ("pause_turn", "pause_turn"),
        ("context_window_exceeded", "context window"),
        ("invalid_json", "not valid JSON"),
    ],
)
def test_malformed_or_unusable_replies_give_no_data_and_a_problem(
    server: FakeModelServer, extractor: AnthropicExtractor, kind: Any, words: str
) -> None:
    server.script(reply(kind))

    result = extractor.call(_request())

    assert result.data is None
    assert result.truncated is False
    assert result.problem is not None and words in result.problem
    assert server.request_count == 1


# --- transport failures --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_transient() -> None:
    extractor = AnthropicExtractor(_settings(f"http://127.0.0.1:{_closed_port()}"))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE
    assert caught.value.request_id is None


def test_dropped_connection_is_transient(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    server.script(drop_connection())

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE
    assert server.request_count == 1


def test_timeout_is_transient_timeout(server: FakeModelServer) -> None:
    extractor = AnthropicExtractor(_settings(server.anthropic_base_url, anthropic_timeout_s=0.3))
    server.latency = 1.5

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.TIMEOUT
    assert caught.value.outage and caught.value.maybe_billed  # sent, then no answer
    assert server.request_count == 1  # our timeout, not the SDK's retries


# --- configuration and inputs --------------------------------------------------------------------


def test_missing_api_key_is_a_configuration_error(server: FakeModelServer) -> None:
    settings = _settings(server.anthropic_base_url, anthropic_api_key=None)

    with pytest.raises(PermanentError) as caught:
        anthropic_extractor.build(settings)

    assert caught.value.category is ErrorCategory.CONFIGURATION
    assert "PAGEMILL_ANTHROPIC_API_KEY" in caught.value.message


def test_registered_as_anthropic(server: FakeModelServer) -> None:
    from pipeline.extractors import build_extractor

    extractor = build_extractor(_settings(server.anthropic_base_url), "anthropic")

    assert isinstance(extractor, AnthropicExtractor)
    assert extractor.provider == "anthropic"
    assert extractor.model == "claude-test-model"
    assert extractor.can_reask is True


def test_unsupported_image_type_is_rejected_before_any_request(
    server: FakeModelServer, extractor: AnthropicExtractor
) -> None:
    with pytest.raises(PermanentError) as caught:
        extractor.call(_request(pages=[sample_page(0, media_type="image/tiff")]))

    assert caught.value.category is ErrorCategory.UNSUPPORTED_TYPE
    assert server.request_count == 0


def test_retry_after_parsing() -> None:
    assert retry_after_seconds({}) is None
    assert retry_after_seconds({"retry-after": "12"}) == 12.0
    assert retry_after_seconds({"retry-after": "0.5"}) == 0.5
    assert retry_after_seconds({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    assert retry_after_seconds({"retry-after-ms": "junk", "retry-after": "9"}) == 9.0
    assert retry_after_seconds({"retry-after": "-3"}) == 0.0
    assert retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"}) == 0.0
    assert retry_after_seconds({"retry-after": "soon"}) is None
