"""A worker killed with SIGKILL in the middle of a model call loses no document and pays once.

What it proves: two documents are claimed by a (warmed-up) worker running the beat, and their model
calls are in flight (the fake provider takes 4 s) when the worker's whole process group gets
SIGKILL, so no `finally`, no requeue and no ack runs. A new worker with `--beat` is started:
the documents are still `processing` under the dead worker's lease; once the lease expires
(17 s) the sweep re-enqueues them and the new worker finishes them. Each ends `done` with one
extractions row and one 'ok' vlm_calls row; each killed call left its row `started` (written
before the request: the provider may bill it), so no request is unrecorded. A late broker
redelivery of the dead worker's messages (as after the visibility timeout) is then a no-op: no
model call for finished documents.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultStack, check_invariants, report, wait_for

pytestmark = pytest.mark.faults

LATENCY_S = 4.0


def test_worker_killed_during_model_call(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.set_latency(LATENCY_S)
    worker_a = stack.spawn_worker("worker-a", beat=True)
    ingest = stack.spawn_ingest()
    stack.wait_ready(worker_a, ingest)
    warm = stack.warm_up(2)

    killed_keys = [stack.upload(f"kill/invoice-{n}.pdf", seed=1100 + n) for n in range(2)]
    assert wait_for(lambda: len(stack.in_flight(LATENCY_S, killed_keys)) == 2, 60, 0.05), (
        "both model calls never were in flight\n" + stack.tails()
    )
    time.sleep(0.5)  # well inside the 4 s call
    in_flight = len(stack.in_flight(LATENCY_S, killed_keys))
    worker_a.kill()  # SIGKILL to the worker's process group: main process, children, beat
    assert in_flight == 2, "the kill did not land during the model calls"
    killed = stack.documents()
    assert [killed[k]["status"] for k in killed_keys] == ["processing"] * 2, killed

    worker_b = stack.spawn_worker("worker-b", beat=True)
    stack.wait_ready(worker_b)
    # While the dead worker's leases run out, warm the new worker's pool processes.
    warm += stack.warm_up(2, wait=False)
    keys = warm + killed_keys
    stack.wait_final(keys, timeout=90)

    figures = stack.figures("worker_killed_during_model_call", killed_in_flight=in_flight)
    redelivered = stack.redeliver(d["id"] for d in stack.documents().values())
    figures["model_requests_from_redelivery"] = redelivered
    report(figures)

    check_invariants(figures)
    assert figures["done"] == len(keys) == figures["pushed"]
    assert figures["ok_calls"] == len(keys)
    assert redelivered == 0, "a redelivered message called the model for a finished document"
    # The killed calls reached the provider and left their rows `started`; an unrecorded request
    # could only be one whose row write failed, and then the request is never sent.
    assert figures["cut_off_calls"] == in_flight, figures
    assert figures["unrecorded_requests"] == 0, figures
    assert figures["priced_error_calls"] == 0 and figures["unpriced_ok_calls"] == 0
    assert "ready." in worker_b.log_path.read_text(errors="replace")
