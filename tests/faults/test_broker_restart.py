"""Redis (the broker) killed with SIGKILL and restarted empty: no document is lost or paid twice.

What it proves: with documents both queued and unacked in a private Redis that has no
persistence, the broker is killed (`kill -9`) and started again empty on the same port, so every
message is gone. Documents uploaded while it is down are registered by intake (Postgres first)
but their nudge cannot be sent; documents uploaded after the restart go through normally. The
worker and intake reconnect by themselves, the beat inside the worker keeps scheduling the sweep
(its own schedule state is a file, not in Redis), and the sweep re-enqueues every document that
Postgres still shows as pending or whose lease ran out. All documents end `done`, each with one
result row and one 'ok' model call, and re-delivering every message afterwards calls nothing.

Known intermittent failure (kombu 5.7's Redis transport, 2 of 14 runs here): when the
connection drops while an ack is failing, the worker's consumer crashes in `_connparams`
(`AttributeError: 'NoneType' object has no attribute 'hostname'`, "Unrecoverable error") while
restoring unacked messages, and the whole worker exits instead of reconnecting. The test
restarts a dead process as compose's `restart: unless-stopped` would, still checks every
document, and then reports the run as xfail with the crash line.
"""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.faults.harness import FaultStack, check_invariants, no_crashes, report, wait_for

pytestmark = pytest.mark.faults

LATENCY_S = 1.5


def test_broker_restarted_without_persistence(fault_stack: FaultStack) -> None:
    stack = fault_stack
    stack.set_latency(LATENCY_S)
    warm = stack.start_supervised()

    before = [stack.upload(f"broker/before-{n}.pdf", seed=2100 + n) for n in range(8)]
    # Kill while calls are running (their messages unacked) and others wait in the queue.
    registered = len(warm) + len(before)
    assert wait_for(lambda: len(stack.documents()) == registered, 30, 0.1), stack.tails()
    assert wait_for(
        lambda: (
            len(stack.in_flight(LATENCY_S, before)) >= 2 and stack.broker_depth()["queued"] >= 1
        ),
        60,
        0.05,
    ), f"never had calls in flight and messages queued: {stack.broker_depth()}\n{stack.tails()}"
    at_kill = stack.broker_depth()
    stack.redis.kill()

    during = [stack.upload(f"broker/during-{n}.pdf", seed=2200 + n) for n in range(2)]
    time.sleep(3.0)
    stack.redis.start()  # empty: --save "" --appendonly no
    restarted = datetime.now()
    assert stack.broker_depth() == {"queued": 0, "unacked": 0}

    after = [stack.upload(f"broker/after-{n}.pdf", seed=2300 + n) for n in range(2)]
    keys = warm + before + during + after
    stack.wait_final(keys, timeout=120)

    figures = stack.figures(
        "broker_restarted_without_persistence",
        queued_at_kill=at_kill["queued"],
        unacked_at_kill=at_kill["unacked"],
        beat_ticks_after_restart=stack.beat_ticks_since(restarted),
    )
    ids = [d["id"] for d in stack.documents().values()]
    figures["model_requests_from_redelivery"] = stack.redeliver(ids)
    report(figures)

    check_invariants(figures)
    assert figures["done"] == len(keys) == figures["pushed"]
    assert figures["model_requests_from_redelivery"] == 0
    # The beat kept scheduling the sweep after the broker came back empty.
    assert figures["beat_ticks_after_restart"] >= 1
    assert figures["priced_error_calls"] == 0 and figures["unpriced_ok_calls"] == 0
    no_crashes(stack, "the broker restart")
