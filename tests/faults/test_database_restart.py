"""Postgres stopped (`pg_ctl stop -m fast`) for a while and started again: every document finishes.

What it proves: the stack runs on a private cluster (migrated with `pagemill migrate`). While
model calls are in flight and more documents wait in the queue, Postgres is stopped, kept down
longer than a model call, and started again with its data. Calls that come back while it is down
cannot store their result; tasks that start cannot claim their document; intake cannot register
an object uploaded meanwhile. Each of those is a transient database error: tasks retry with
backoff, intake leaves the event in SQS for redelivery, and documents whose claim outlived the
outage are handed out again by the sweep once their lease runs out (their own task's retry finds
the document still leased, to itself, and does nothing). Afterwards every document is
`done` with one result row and one 'ok' model call; the calls whose results could not be saved
are the only extra provider requests, each with its row left `started` (written before the
request went out), so no request is unrecorded.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import FaultStack, check_invariants, no_crashes, report, wait_for

pytestmark = pytest.mark.faults

LATENCY_S = 2.0
OUTAGE_S = 5.0


def test_database_stopped_and_started(fault_stack_own_postgres: FaultStack) -> None:
    stack = fault_stack_own_postgres
    stack.set_latency(LATENCY_S)
    warm = stack.start_supervised()

    before = [stack.upload(f"db/before-{n}.pdf", seed=3100 + n) for n in range(6)]
    registered = len(warm) + len(before)
    assert wait_for(lambda: len(stack.documents()) == registered, 30, 0.1), stack.tails()
    assert wait_for(lambda: len(stack.in_flight(LATENCY_S, before)) >= 2, 60, 0.05), (
        "model calls never were in flight\n" + stack.tails()
    )
    in_flight = len(stack.in_flight(LATENCY_S, before))
    at_stop = stack.broker_depth()
    stopped = time.monotonic()
    stack.postgres.stop("fast")

    during = [stack.upload(f"db/during-{n}.pdf", seed=3200 + n) for n in range(2)]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    stack.postgres.start()
    outage_s = round(time.monotonic() - stopped, 1)

    keys = warm + before + during
    stack.wait_final(keys, timeout=120)

    figures = stack.figures(
        "database_stopped_and_started",
        outage_s=outage_s,
        in_flight_at_stop=in_flight,
        queued_at_stop=at_stop["queued"],
        database_retries=_count(stack, "database_unavailable"),
    )
    ids = [d["id"] for d in stack.documents().values()]
    figures["model_requests_from_redelivery"] = stack.redeliver(ids)
    report(figures)

    check_invariants(figures)
    assert figures["done"] == len(keys) == figures["pushed"]
    assert figures["model_requests_from_redelivery"] == 0
    assert figures["priced_error_calls"] == 0 and figures["unpriced_ok_calls"] == 0
    # Calls whose answer arrived while the database was down keep their `started` row (as do
    # tasks stopped by the short time limits, see FaultStack.time_limit_hits): none unrecorded.
    assert figures["unrecorded_requests"] == 0, figures
    assert figures["cut_off_calls"] <= in_flight + figures["time_limit_hits"], figures
    no_crashes(stack, "the database restart")


def _count(stack: FaultStack, text: str) -> int:
    return sum(
        process.log_path.read_text(errors="replace").count(text) for process in stack.processes
    )
