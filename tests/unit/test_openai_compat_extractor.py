"""The OpenAI-compatible extractor driving the real `openai` SDK against the fake model server."""

from __future__ import annotations

import json
import socket
from typing import Any

import pytest

from pipeline.domain import ExtractionRequest
from pipeline.errors import ErrorCategory, PermanentError, TransientError
from pipeline.extractors import openai_compat
from pipeline.extractors.openai_compat import OpenAICompatExtractor, parse_json_object
from pipeline.schemas import get_schema
from pipeline.settings import Settings, load_settings
from tests.support.fake_model_fixtures import sample_page, sample_request
from tests.support.fake_model_server import FakeModelServer, drop_connection, error, reply

API_KEY = "sk-local-test-0123456789abcdef"


def _settings(base_url: str, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "openai_api_key": API_KEY,
        "openai_base_url": base_url,
        "openai_model": "Qwen/Qwen2-VL-7B-Instruct",
        "openai_timeout_s": 5.0,
    }
    values.update(overrides)
    return load_settings(**values)


@pytest.fixture
def server(fake_model_server: FakeModelServer) -> FakeModelServer:
    return fake_model_server


@pytest.fixture(scope="module")
def extractor(fake_model_server_session: FakeModelServer) -> OpenAICompatExtractor:
    # One extractor (one SDK client) for the module's tests.
    return OpenAICompatExtractor(_settings(fake_model_server_session.openai_base_url))


def _request(**kwargs: Any) -> ExtractionRequest:
    return sample_request(**kwargs)


# --- success -----------------------------------------------------------------------------------


def test_success_returns_valid_data_usage_and_request_id(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    result = extractor.call(_request())

    assert result.problem is None
    assert result.truncated is False
    assert result.stop_reason == "stop"
    assert result.data is not None
    invoice = get_schema("invoice").model.model_validate(result.data)
    assert invoice.model_dump()["total"] is not None
    assert result.usage.input_tokens > 0
    assert result.usage.output_tokens > 0
    recorded = server.last_request
    assert result.request_id == recorded.request_id
    assert recorded.api == "openai"
    assert recorded.auth == "bearer"
    assert recorded.model == "Qwen/Qwen2-VL-7B-Instruct"
    assert server.request_count == 1


def test_structured_output_by_response_format(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    extractor.call(_request())

    body = server.last_request.body
    assert body["response_format"] == {
        "type": "json_schema",
        "json_schema": {
            "name": "invoice",
            "schema": get_schema("invoice").json_schema(),
            "strict": True,
        },
    }
    system = body["messages"][0]
    assert system["role"] == "system"
    assert get_schema("invoice").instructions in system["content"]
    assert "max_tokens" not in body  # left to the server unless the request sets it


def test_pages_become_data_url_images_followed_by_their_text_layer(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    pages = [
        sample_page(0, text="ACME GmbH  Invoice INV-7"),
        sample_page(1),
        sample_page(2, text="Total 178.50 EUR", media_type="image/png"),
    ]
    extractor.call(_request(pages=pages, feedback="total: field required", max_tokens=900))

    recorded = server.last_request
    content = recorded.body["messages"][1]["content"]
    assert [part["type"] for part in content] == [
        "image_url",
        "text",
        "image_url",
        "image_url",
        "text",
        "text",
    ]
    assert content[0]["image_url"]["url"].startswith("data:image/jpeg;base64,")
    assert content[3]["image_url"]["url"].startswith("data:image/png;base64,")
    assert content[1]["text"] == "Text layer of page 1:\nACME GmbH  Invoice INV-7"
    assert content[4]["text"] == "Text layer of page 3:\nTotal 178.50 EUR"
    assert "Your previous answer failed validation: total: field required" in content[-1]["text"]
    assert len(recorded.images()) == 3
    assert recorded.max_tokens == 900


def test_cached_prompt_tokens_are_reported_as_cache_reads(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    first = extractor.call(_request())
    second = extractor.call(_request())

    assert first.usage.cache_read_input_tokens == 0
    assert second.usage.cache_read_input_tokens > 0
    assert second.usage.total_input_tokens == first.usage.total_input_tokens
    assert second.usage.input_tokens < first.usage.input_tokens


def test_without_an_api_key_the_sdk_gets_a_placeholder(server: FakeModelServer) -> None:
    server.expected_api_key = openai_compat.NO_API_KEY
    extractor = OpenAICompatExtractor(_settings(server.openai_base_url, openai_api_key=None))

    result = extractor.call(_request())

    assert result.data is not None
    assert server.last_request.auth == "bearer"


def test_registered_as_openai_compat(server: FakeModelServer) -> None:
    from pipeline.extractors import build_extractor

    extractor = build_extractor(_settings(server.openai_base_url), "openai_compat")

    assert isinstance(extractor, OpenAICompatExtractor)
    assert extractor.provider == "openai_compat"
    assert API_KEY not in repr(extractor)


# --- HTTP errors ---------------------------------------------------------------------------------


def test_429_is_transient_rate_limited_with_retry_after_and_one_request(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    server.script(error(429, retry_after=7))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    err = caught.value
    assert err.category is ErrorCategory.PROVIDER_RATE_LIMITED
    assert err.retry_after_s == 7.0
    assert err.request_id == server.last_request.request_id
    assert server.request_count == 1


def test_retry_after_ms_wins(server: FakeModelServer, extractor: OpenAICompatExtractor) -> None:
    server.script(error(503, retry_after_ms=1500, retry_after=30))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE
    assert caught.value.retry_after_s == pytest.approx(1.5)


@pytest.mark.parametrize(
    ("status", "category", "transient"),
    [
        (400, ErrorCategory.PROVIDER_REJECTED, False),
        (401, ErrorCategory.PROVIDER_AUTH, False),
        (403, ErrorCategory.PROVIDER_AUTH, False),
        (404, ErrorCategory.PROVIDER_REJECTED, False),
        (408, ErrorCategory.PROVIDER_UNAVAILABLE, True),
        (409, ErrorCategory.PROVIDER_UNAVAILABLE, True),
        (422, ErrorCategory.PROVIDER_REJECTED, False),
        (500, ErrorCategory.PROVIDER_UNAVAILABLE, True),
        (529, ErrorCategory.PROVIDER_UNAVAILABLE, True),
    ],
)
def test_status_mapping(
    server: FakeModelServer,
    extractor: OpenAICompatExtractor,
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
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    server.script(error(500, should_retry=False))

    with pytest.raises(PermanentError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE


def test_wrong_key_is_permanent_auth_without_leaking_the_key(server: FakeModelServer) -> None:
    server.expected_api_key = "the-right-key"
    server.script(error(401, message=f"bad key {API_KEY}"))
    extractor = OpenAICompatExtractor(_settings(server.openai_base_url))

    with pytest.raises(PermanentError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_AUTH
    assert API_KEY not in str(caught.value)


# --- completed calls without usable output -----------------------------------------------------


def test_finish_reason_length_is_truncated(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    server.script(reply("max_tokens"))

    result = extractor.call(_request(max_tokens=256))

    assert result.truncated is True
    assert result.data is None
    assert result.stop_reason == "length"
    assert result.problem is not None and "max_tokens=256" in result.problem
    assert result.usage.output_tokens == 256


@pytest.mark.parametrize(
    ("kind", "words"),
    [
        ("invalid_json", "not valid JSON"),
        ("no_tool_use", "not valid JSON"),  # prose instead of JSON
        ("tool_use_input_not_object", "not an object"),
        ("tool_use_without_input", "without content"),
        ("no_choices", "no choices"),
        ("refusal", "refused"),
    ],
)
def test_malformed_or_unusable_replies_give_no_data_and_a_problem(
    server: FakeModelServer, extractor: OpenAICompatExtractor, kind: Any, words: str
) -> None:
    server.script(reply(kind))

    result = extractor.call(_request())

    assert result.data is None
    assert result.truncated is False
    assert result.problem is not None and words in result.problem
    assert result.request_id == server.last_request.request_id


def test_missing_usage_keeps_the_data_with_zero_usage(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    server.script(reply("no_usage"))

    result = extractor.call(_request())

    assert result.data is not None
    assert result.usage.total_input_tokens == 0


def test_json_in_a_code_fence_is_accepted() -> None:
    data, problem = parse_json_object('```json\n{"total": "1.00"}\n```')
    assert problem is None and data == {"total": "1.00"}
    data, problem = parse_json_object(json.dumps(["a"]))
    assert data is None and problem is not None


# --- transport failures --------------------------------------------------------------------------


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_connection_refused_is_transient() -> None:
    extractor = OpenAICompatExtractor(_settings(f"http://127.0.0.1:{_closed_port()}/v1"))

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE


def test_dropped_connection_is_transient(
    server: FakeModelServer, extractor: OpenAICompatExtractor
) -> None:
    server.script(drop_connection())

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.PROVIDER_UNAVAILABLE


def test_timeout_is_transient_timeout(server: FakeModelServer) -> None:
    extractor = OpenAICompatExtractor(_settings(server.openai_base_url, openai_timeout_s=0.3))
    server.latency = 1.5

    with pytest.raises(TransientError) as caught:
        extractor.call(_request())

    assert caught.value.category is ErrorCategory.TIMEOUT
    assert caught.value.outage and caught.value.maybe_billed  # sent, then no answer
    assert server.request_count == 1  # our timeout, not the SDK's retries
