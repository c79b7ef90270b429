"""Throughput benchmark: uploads → bucket events → intake → workers → Postgres, end to end.

Against a fake model provider with a latency distribution and a provider concurrency limit.

    python -m bench.throughput                      # defaults sized for a 2-core machine
    python -m bench.throughput --setups fitted --docs 600 --limit 64 --latency-mean 3

Set-ups (each on a fresh bucket, an emptied database and a flushed Redis db):

* fitted: one prefork worker on the `prepare` queue (concurrency 2) and one threads worker on
  the `extract` queue (concurrency = the limit);
* naive: one prefork worker on every queue, one call per process (concurrency 2);
* high: the fitted set-up at 200 calls in flight (limit 200), where the provider's bound
  (200 ÷ latency) is above what two cores can do: reported against the CPU ceiling measured in
  the same run;
* scanned: the fitted set-up at 64 in flight on scans (`bench.scans`: invoice scans of one and
  several pages, receipt photos): every page is OCR'd for grounding with the pipeline's fast
  setting; reported against the lower of the provider's bound and the CPU ceiling, with the
  CPU per scanned page split by step (measured in this process on the same documents).

Each set-up: start the processes, wait until they are ready, process a few warm-up documents
(imports, connection pools), then (fitted only) a paced, unsaturated phase that measures the
upload-to-result overhead beyond the model call, then the load: every document is uploaded (8
threads) to a bucket whose events wait in a queue of their own, then a second intake is started
on that queue, so the burst reaches the pipeline at once and the uploads stay out of the
measured CPU. Figures come from Postgres (documents.finished_at, vlm_calls.latency_ms), the
upload times recorded here, /proc (CPU, memory) and the fake provider's own in-flight counter.
bench/README.md says what each figure means.

Everything runs on 127.0.0.1: an S3 + SQS server (`bench.fakeaws`; moto with `--aws moto`) and
the fake provider each in their own process, Postgres database `pagemill_bench` (dropped and
created here) and Redis db 12 (flushed here). A hard timeout bounds each set-up and the whole
run; every process started is stopped.

Modules: `options` (the command line), `setups` (what each set-up runs), `services` (helper
servers, database, Redis), `uploads` (the documents and the uploader), `setup_run` (one set-up
from start to stop), `figures` (latencies, throughput, log counts), `bounds` (CPU ceiling and
bounds), `scanned` (the scanned workload), `report` (the printed report), `benchmark` (the run).
"""

from __future__ import annotations

from bench.throughput.benchmark import main, run
from bench.throughput.options import Options, parse_args
from bench.throughput.report import headline, scanned_headline
from bench.throughput.services import flush_redis, reset_database

__all__ = [
    "Options",
    "flush_redis",
    "headline",
    "main",
    "parse_args",
    "reset_database",
    "run",
    "scanned_headline",
]
