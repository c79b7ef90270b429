"""Failover on real Postgres, Redis (the circuit state every worker shares) and the fake
provider through the real SDKs: an open circuit routes to the secondary and closes again."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pytest

from pipeline.cost.circuit import MemoryCircuitBreaker, RedisCircuitBreaker
from pipeline.domain import DocumentStatus
from pipeline.errors import ErrorCategory, TransientError
from pipeline.synthetic import make_invoice, render_pdf
from pipeline.usecases.process import Collaborators
from tests.support.cost_helpers import done_but_a_copy, upload, with_cost
from tests.support.fake_model_server import FakeModelServer, error
from tests.support.pipeline_helpers import calls, document, process_document
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration

SONNET = "claude-sonnet-4-6"
OPEN_S = 1.0


def _fail_twice(deps: Collaborators, doc: int) -> None:
    for _ in range(2):
        with pytest.raises(TransientError) as info:
            process_document(deps, doc)
        assert info.value.category is ErrorCategory.PROVIDER_UNAVAILABLE


def test_an_open_circuit_routes_to_the_secondary_and_closes_again(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(
        deps,
        fake_model_server,
        shared_state=True,
        circuit_failures=2,
        circuit_open_s=OPEN_S,
        failover="anthropic:*=openai_compat",
        page_cache=False,
    )
    assert deps.cost is not None
    circuit = deps.cost.circuit
    invoice = make_invoice(81)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(error(529, api="anthropic"), error(529, api="anthropic"))
    pdf = render_pdf(invoice)
    first = upload(deps, bucket_with_queue.bucket, "a.pdf", pdf)

    _fail_twice(deps, first)  # the provider is overloaded: two outage failures open the circuit
    assert circuit.state("anthropic", SONNET) == "open"
    assert isinstance(circuit, RedisCircuitBreaker)
    assert ("anthropic", SONNET, 2) in circuit.samples()  # pagemill_circuit_state: 2 = open
    assert process_document(deps, first) is DocumentStatus.DONE  # served by the secondary

    failed_1, failed_2, served = calls(deps, first)
    assert {failed_1.outcome, failed_2.outcome} == {"error"}
    assert failed_1.provider == failed_2.provider == "anthropic"
    assert (served.provider, served.model, served.outcome) == (
        "openai_compat",
        "Qwen/Qwen2.5-VL-7B-Instruct",
        "ok",
    )
    assert fake_model_server.count("openai") == 1

    # Past the open period one probe goes to the primary; it answers, the circuit closes.
    time.sleep(OPEN_S + 0.2)
    second = upload(deps, bucket_with_queue.bucket, "b.pdf", pdf)
    assert done_but_a_copy(deps, second, process_document(deps, second))
    [probe] = calls(deps, second)
    assert probe.provider == "anthropic" and probe.outcome == "ok"
    assert circuit.state("anthropic", SONNET) == "closed"
    assert ("anthropic", SONNET, 0) in circuit.samples()
    third = upload(deps, bucket_with_queue.bucket, "c.pdf", pdf)
    assert done_but_a_copy(deps, third, process_document(deps, third))
    assert calls(deps, third)[0].provider == "anthropic"
    assert fake_model_server.count("openai") == 1


def test_without_a_secondary_the_work_waits_instead_of_failing(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    deps = with_cost(
        deps,
        fake_model_server,
        shared_state=True,
        circuit_failures=2,
        circuit_open_s=60,
        task_max_retries=1,
    )
    invoice = make_invoice(82)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(error(503, api="anthropic"), error(503, api="anthropic"))
    doc = upload(deps, bucket_with_queue.bucket, "a.pdf", render_pdf(invoice))
    _fail_twice(deps, doc)
    requests = fake_model_server.count("anthropic")

    assert process_document(deps, doc) is None
    held = document(deps, doc)
    assert (held.status, held.wait_reason) == ("pending", "provider_down")  # not failed
    assert held.retries == 0  # an outage uses up no retries
    assert held.not_before is not None
    assert fake_model_server.count("anthropic") == requests  # no call while open
    # Messages that come before the circuit lets a probe through start nothing.
    assert process_document(deps, doc) is None
    assert fake_model_server.count("anthropic") == requests


def test_held_work_resumes_as_soon_as_a_probe_closes_the_circuit(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    clock = Clock()
    deps = with_cost(
        deps,
        fake_model_server,
        circuit=MemoryCircuitBreaker(failure_threshold=2, open_s=600, clock=clock),
        circuit_open_s=600,
        page_cache=False,
    )
    invoice = make_invoice(83)
    fake_model_server.fields = invoice.expected()
    fake_model_server.script(error(529, api="anthropic"), error(529, api="anthropic"))
    pdf = render_pdf(invoice)
    held = upload(deps, bucket_with_queue.bucket, "held.pdf", pdf)
    _fail_twice(deps, held)
    assert process_document(deps, held) is None
    waiting = document(deps, held)
    assert waiting.wait_reason == "provider_down"
    assert waiting.not_before is not None
    assert waiting.not_before > datetime.now(UTC) + timedelta(minutes=5)  # the open period

    clock.now += 600  # the open period is over: the next call is the probe
    probe = upload(deps, bucket_with_queue.bucket, "probe.pdf", pdf)
    assert process_document(deps, probe) is DocumentStatus.DONE

    # The probe closed the circuit: the held document is due now, not in ten minutes.
    woken = document(deps, held)
    assert woken.not_before is not None and woken.not_before <= datetime.now(UTC)
    assert done_but_a_copy(deps, held, process_document(deps, held))  # the probe was first
    assert [c.outcome for c in calls(deps, held)] == ["error", "error", "ok"]


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now
