"""Duplicate and missing bucket events: one document per object, and none left behind.

What it proves, with real S3 notifications on SQS (moto) and the real intake process:

* Duplicate: the SQS event of an upload is delivered twice (a copy of its body is sent to the
  queue beside the original) before intake runs. Intake handles both, the second as a duplicate:
  one document, one model call, one result row. A third copy delivered after the document is
  done changes nothing and calls nothing.
* Missing: an object is uploaded while intake is stopped and its event is purged from the queue,
  so no event will ever name it. `pagemill reconcile BUCKET` lists the bucket, registers the
  object without a document (and only that one: the other is known by its ETag), and the worker
  finishes it. Running reconcile again finds nothing. (The worker runs the beat, but the sweep
  only re-sends documents Postgres knows; only reconciliation can find this object.)
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    FaultStack,
    check_invariants,
    queue_counts,
    release_event,
    report,
    take_event,
    wait_for,
)
from workers import devstack

pytestmark = pytest.mark.faults

SQS_WAIT_S = 1  # PAGEMILL_SQS_WAIT_SECONDS in the fault stack


def test_duplicate_and_missing_bucket_events(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.set_latency(0.3)
    sqs, queue_url = stack.bucket.sqs, stack.bucket.queue_url
    worker = stack.spawn_worker("worker", beat=True)
    ingest = stack.spawn_ingest("ingest-1")
    stack.wait_ready(worker, ingest)
    stack.warm_up(2)
    _stop_intake(ingest)

    # Duplicate: two deliveries of the same event wait in the queue before intake starts.
    dup = stack.upload("events/duplicate.pdf", seed=5100)
    original = take_event(stack.bucket, dup)
    sqs.send_message(QueueUrl=queue_url, MessageBody=original["Body"])
    release_event(stack.bucket, original)
    assert wait_for(lambda: queue_counts(stack.bucket) == (2, 0), 10), queue_counts(stack.bucket)

    ingest = stack.spawn_ingest("ingest-2")
    stack.wait_ready(ingest)
    stack.wait_final([dup], timeout=60)
    assert wait_for(lambda: queue_counts(stack.bucket) == (0, 0), 20), "events left in the queue"
    assert "duplicate event for document" in ingest.log_path.read_text(errors="replace")

    # A third delivery, after the document is done.
    requests_before = len(stack.model_requests())
    sqs.send_message(QueueUrl=queue_url, MessageBody=original["Body"])
    assert wait_for(lambda: queue_counts(stack.bucket) == (0, 0), 20), "late copy not consumed"
    time.sleep(1.5)
    late_requests = len(stack.model_requests()) - requests_before

    # Missing: uploaded while intake is stopped, and its event purged.
    _stop_intake(ingest)
    missing = stack.upload("events/missing.pdf", seed=5200)
    assert wait_for(lambda: sum(queue_counts(stack.bucket)) >= 1, 10), "no event was sent"
    sqs.purge_queue(QueueUrl=queue_url)
    assert wait_for(lambda: queue_counts(stack.bucket) == (0, 0), 10), "purge left events"
    assert missing not in stack.documents()

    first = stack.cli("reconcile", stack.bucket.bucket)
    stack.wait_final([dup, missing], timeout=60)
    second = stack.cli("reconcile", stack.bucket.bucket)

    figures = stack.figures(
        "duplicate_and_missing_bucket_events",
        prefix="events/",
        deliveries_of_duplicate=3,
        model_requests_from_late_copy=late_requests,
        reconciled_first=_count(first),
        reconciled_second=_count(second),
    )
    report(figures)

    check_invariants(figures)
    assert figures["done"] == 2 == figures["pushed"] == figures["documents"]
    assert figures["ok_calls"] == 2
    assert figures["model_requests"] - 2 <= figures["time_limit_hits"], figures
    assert late_requests == 0
    assert figures["reconciled_first"] == 1, first
    assert figures["reconciled_second"] == 0, second
    # The warm-up documents were known to reconcile by their ETags: still one document each.
    everything = stack.figures("duplicate_and_missing_bucket_events_all")
    check_invariants(everything)
    assert everything["documents"] == everything["pushed"] == everything["done"]


def _stop_intake(ingest: devstack.Process) -> None:
    ingest.stop()
    # A long poll the dead intake left open can still take (and hide, for the queue's visibility
    # timeout) a message sent within its wait time: let it run out first.
    time.sleep(SQS_WAIT_S + 0.5)


def _count(output: str) -> int:
    # "N object(s) without an event ingested"
    return int(output.strip().splitlines()[-1].split()[0])
