"""What every fault test shares: a private stack, uploads, waiting, and the figures it reports.

A `FaultStack` is one test's world: a private Redis (the broker) that the test may kill, a
fresh database on a private Postgres cluster (schema by `pagemill migrate`; a test that stops
Postgres gets a cluster of its own, see conftest.py), a fresh bucket wired to a fresh SQS queue
on the session's moto server, and the session's fake Anthropic server. The pipeline runs as
real processes (`pagemill worker`, `pagemill ingest`, `pagemill reconcile`) spawned from it.

Each uploaded document is a synthetic invoice with its own invoice number; the fake server
answers each model call with that invoice's fields (found in the page text it is sent), so a
finished document is `done`, and every model request can be traced back to its document.

`FaultStack.figures()` measures, for the test's bucket:

* pushed: objects uploaded; lost: pushed objects without a final document;
* duplicate_documents / duplicate_results: document rows beyond one per object, extraction
  rows beyond one per document; missing_results: `done` documents without a valid extraction;
* duplicate_paid_calls: vlm_calls rows with outcome 'ok' beyond one per document;
* model_requests: requests the fake provider received, requests_after_finish: those for a
  document received after it was finished (a paid call for finished work), unrecorded_requests:
  requests without a vlm_calls row, cut_off_calls: rows left `started` (calls cut off by a
  crash or a time limit, written before the request: the provider may bill them);
* error_calls and error_categories of the vlm_calls 'error' rows;
* dead_letters: open dead letters; paid_twice: pages (document, page index) covered by more
  than one 'ok' call: an answer paid for twice;
* sweep_reenqueues: documents the sweep re-enqueued; time_limit_hits: tasks stopped by a time
  limit (see `FaultStack.time_limit_hits`); process_crashes: supervised processes that died
  by themselves (see `FaultStack.spawn`), exits_0: those that said they ended well;
* seconds: from the stack's start to these figures.

`check_invariants()` asserts the promises every fault test makes; `report()` prints the figures
(visible with ``pytest -s``) and appends them as one JSON line to ``$PAGEMILL_FAULT_REPORT``
(`python -m tests.faults.report FILE` turns them into the table of tests/faults/README.md).

The outage tests (broker, database, provider) take their length and settings from the
environment, so that the suite runs them short and a person can run them as in production:

* ``PAGEMILL_FAULT_OUTAGE_S`` (default 45): how long the database is down, or the provider
  answers 529;
* ``PAGEMILL_FAULT_SETTINGS``: ``scaled`` (default) scales the retry budget down to ~9 s (so a
  45 s outage outlasts it five times) and the waits between tries to 2.5 s; ``default`` runs
  the pipeline's own defaults (a budget of minutes, waits up to 5 minutes, a sweep a minute).

Modules: `stack` (`FaultStack`, `wait_for`, `document_tasks`), `invoices` (`InvoiceBook`),
`settings` (the recovery clocks and the outage settings), `figures` (`Figures` and how they
are measured), `checks` (`check_invariants` and the outage tests' checks), `reporting`
(`report`), `events` (the bucket's event queue by hand).
"""

from __future__ import annotations

from tests.faults.harness.checks import (
    check_invariants,
    log_lines,
    no_crashes,
    no_leftover_files,
    no_waiting_failures,
)
from tests.faults.harness.events import queue_counts, release_event, take_event
from tests.faults.harness.figures import FINAL, Figures
from tests.faults.harness.invoices import InvoiceBook
from tests.faults.harness.reporting import REPORT_ENV, report
from tests.faults.harness.settings import (
    API_KEY,
    FULL_SETTINGS,
    OUTAGE_S,
    RECOVERY_SETTINGS,
    SCALED_OUTAGE_SETTINGS,
    outage_settings,
    outage_timeout,
)
from tests.faults.harness.stack import FaultStack, document_tasks, wait_for

__all__ = [
    "API_KEY",
    "FINAL",
    "FULL_SETTINGS",
    "OUTAGE_S",
    "RECOVERY_SETTINGS",
    "REPORT_ENV",
    "SCALED_OUTAGE_SETTINGS",
    "FaultStack",
    "Figures",
    "InvoiceBook",
    "check_invariants",
    "document_tasks",
    "log_lines",
    "no_crashes",
    "no_leftover_files",
    "no_waiting_failures",
    "outage_settings",
    "outage_timeout",
    "queue_counts",
    "release_event",
    "report",
    "take_event",
    "wait_for",
]
