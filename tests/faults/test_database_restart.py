"""Postgres down for several times the retry budget, with calls in flight: nothing dead-lettered,
nothing failed, nothing paid twice, and a quiet log.

What it proves, on the bare `pagemill worker` (prepare on prefork, extract on threads) and an
intake, against a private cluster of the test's own: while model calls are in flight and more
documents are queued, Postgres is stopped (`pg_ctl stop -m fast`) for PAGEMILL_FAULT_OUTAGE_S
(45 s in the suite; the retry budget is scaled to ~9 s, see tests/faults/harness/settings.py) and
started again with its data.

* Calls that answer while it is down keep their answer in the process and write it when the
  database is back (issue 10, item 2): every document is asked exactly once, and no call row is
  left `started`.
* Tasks that cannot claim or park their document carry their wait in the broker message and
  try again, without using up the document's retries (item 3): no document fails, no dead
  letter, however long the outage.
* Intake cannot register the objects uploaded meanwhile: their events come back from SQS until
  it can.
* The logs say once per process that the database is down and once that it is back, without a
  traceback (item 6).
"""

from __future__ import annotations

import time

import pytest

from tests.faults.harness import (
    OUTAGE_S,
    FaultStack,
    check_invariants,
    log_lines,
    no_crashes,
    no_waiting_failures,
    outage_settings,
    outage_timeout,
    report,
    wait_for,
)

pytestmark = pytest.mark.faults

LATENCY_S = 2.0


def test_database_down_longer_than_the_retry_budget(fault_stack_own_postgres: FaultStack) -> None:
    stack = fault_stack_own_postgres
    stack.use_settings(outage_settings())
    stack.set_latency(LATENCY_S)
    warm = stack.start_bare_supervised(extract=6)

    before = [stack.upload(f"db/before-{n}.pdf", seed=3100 + n) for n in range(8)]
    registered = len(warm) + len(before)
    assert wait_for(lambda: len(stack.documents()) == registered, 60, 0.1), stack.tails()
    assert wait_for(lambda: len(stack.in_flight(LATENCY_S, before)) >= 2, 60, 0.05), (
        "model calls never were in flight\n" + stack.tails()
    )
    in_flight = [stack.book.key_for(r) for r in stack.in_flight(LATENCY_S, before)]
    at_stop = stack.broker_depth()
    stopped = time.monotonic()
    stack.postgres.stop("fast")
    tracebacks_before = log_lines(stack, "Traceback")

    during = [stack.upload(f"db/during-{n}.pdf", seed=3200 + n) for n in range(2)]
    time.sleep(max(0.0, OUTAGE_S - (time.monotonic() - stopped)))
    tracebacks_during = log_lines(stack, "Traceback") - tracebacks_before
    stack.postgres.start()
    outage_s = round(time.monotonic() - stopped, 1)
    restarted = time.monotonic()

    keys = warm + before + during
    stack.wait_final(keys, timeout=outage_timeout())
    figures = stack.figures(
        "database_down_for_longer_than_the_retry_budget",
        outage_s=outage_s,
        in_flight_at_stop=len(in_flight),
        queued_at_stop=at_stop["queued"],
        final_after_restart_s=round(time.monotonic() - restarted, 1),
        tracebacks_during_outage=tracebacks_during,
        database_down_lines=log_lines(stack, "database unavailable"),
    )
    ids = [d["id"] for d in stack.documents().values()]
    figures["model_requests_from_redelivery"] = stack.redeliver(ids)
    report(figures)

    no_crashes(stack)
    check_invariants(figures)
    no_waiting_failures(figures)
    assert figures["model_requests_from_redelivery"] == 0
    # The answers that arrived during the outage were kept and written, not asked again.
    assert figures["max_requests_per_document"] == 1, figures
    assert figures["model_requests"] == len(keys)
    assert figures["cut_off_calls"] == 0 and figures["unrecorded_requests"] == 0, figures
    assert figures["priced_error_calls"] == 0 and figures["unpriced_ok_calls"] == 0
    # Quiet: a line per process when it goes down, none per failure, no traceback.
    assert figures["tracebacks_during_outage"] == 0, figures
    assert 1 <= figures["database_down_lines"] <= 8, figures
