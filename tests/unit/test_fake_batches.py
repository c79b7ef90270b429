"""The fake provider's Message Batches endpoints, read by the real SDK as it reads the real API,
and the Anthropic extractor's batch methods on top of them."""

from __future__ import annotations

import anthropic
import pytest
from pydantic import SecretStr

from pipeline.errors import ErrorCategory
from pipeline.extractors.anthropic import AnthropicExtractor
from pipeline.settings import load_settings
from tests.support.fake_model_fixtures import sample_request
from tests.support.fake_model_server import (
    FakeModelServer,
    batch_canceled,
    batch_errored,
    batch_expired,
    reply,
)


def _params(n: int) -> dict[str, object]:
    return {
        "model": "claude-sonnet-4-6",
        "max_tokens": 512,
        "messages": [{"role": "user", "content": f"request {n}"}],
    }


def test_the_sdk_reads_batches_and_their_results_as_from_the_real_api(
    fake_model_server: FakeModelServer,
) -> None:
    fake_model_server.hold_batches = True
    fake_model_server.script_batch(
        reply(), batch_errored("invalid_request_error"), batch_expired(), batch_canceled()
    )
    client = anthropic.Anthropic(
        api_key="sk-test", base_url=fake_model_server.anthropic_base_url, max_retries=0
    )
    created = client.messages.batches.create(
        requests=[{"custom_id": f"c{n}", "params": _params(n)} for n in range(4)]  # type: ignore[misc]
    )
    assert created.processing_status == "in_progress"
    assert created.request_counts.processing == 4 and created.results_url is None
    with pytest.raises(anthropic.AnthropicError):
        list(client.messages.batches.results(created.id))  # not ended: no results yet

    assert fake_model_server.end_batches() == 1
    ended = client.messages.batches.retrieve(created.id)
    assert ended.processing_status == "ended" and ended.ended_at is not None
    counts = ended.request_counts
    assert (counts.succeeded, counts.errored, counts.expired, counts.canceled) == (1, 1, 1, 1)
    results = {line.custom_id: line.result for line in client.messages.batches.results(created.id)}
    assert set(results) == {"c0", "c1", "c2", "c3"}
    assert results["c0"].type == "succeeded"
    assert results["c0"].message.usage.service_tier == "batch"
    assert results["c1"].type == "errored"
    assert results["c1"].error.error.type == "invalid_request_error"
    assert (results["c2"].type, results["c3"].type) == ("expired", "canceled")
    assert [b.id for b in client.messages.batches.list()] == [created.id]


def test_duplicate_custom_ids_are_refused(fake_model_server: FakeModelServer) -> None:
    client = anthropic.Anthropic(
        api_key="sk-test", base_url=fake_model_server.anthropic_base_url, max_retries=0
    )
    with pytest.raises(anthropic.BadRequestError):
        client.messages.batches.create(
            requests=[{"custom_id": "same", "params": _params(n)} for n in range(2)]  # type: ignore[misc]
        )


def test_the_extractor_submits_and_reads_a_batch_in_our_terms(
    fake_model_server: FakeModelServer,
) -> None:
    settings = load_settings(
        anthropic_api_key=SecretStr("sk-test"),
        anthropic_base_url=fake_model_server.anthropic_base_url,
    )
    extractor = AnthropicExtractor(settings)
    params = extractor.batch_params(sample_request())
    fake_model_server.script_batch(reply(), batch_errored("overloaded_error"), batch_expired())
    state = extractor.submit_batch([("a", params), ("b", params), ("c", params)])
    assert not state.ended
    assert extractor.batch_state(state.id).ended  # the fake ends a batch at its first poll
    outcomes = {o.custom_id: o for o in extractor.batch_results(state.id, {"a": params})}

    assert outcomes["a"].kind == "succeeded" and outcomes["a"].reply is not None
    assert outcomes["a"].reply.data is not None and outcomes["a"].reply.usage.output_tokens > 0
    assert outcomes["a"].reply.usage.service_tier == "batch"
    assert (
        outcomes["b"].transient
        and outcomes["b"].error_category is ErrorCategory.PROVIDER_UNAVAILABLE
    )
    assert outcomes["c"].kind == "expired" and outcomes["c"].transient
