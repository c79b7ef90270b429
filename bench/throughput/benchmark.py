"""The whole run: every set-up in turn under the hard timeouts, then the report."""

from __future__ import annotations

import signal
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench import common
from bench.common import log
from bench.throughput.figures import scan_logs
from bench.throughput.options import Options, parse_args
from bench.throughput.report import headline, scanned_headline, summarise
from bench.throughput.scanned import scanned_pool_and_answers, scanned_steps
from bench.throughput.services import (
    Helper,
    empty_tables,
    flush_redis,
    reset_database,
    start_helper,
)
from bench.throughput.setup_run import SetupRun
from bench.throughput.setups import setups_for
from bench.throughput.uploads import PoolItem

INVOICE_POOL = 40  # distinct invoices (rendering one costs ~0.1 s); keys are unique anyway


class _Timeout(Exception):
    pass


def _alarm(signum: int, frame: object) -> None:
    raise _Timeout("the benchmark's hard timeout fired")


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def run(opts: Options) -> dict[str, Any]:
    from sqlalchemy import create_engine

    started = time.monotonic()
    deadline = started + opts.timeout
    old_alarm = signal.signal(signal.SIGALRM, _alarm)
    old_term = signal.signal(signal.SIGTERM, _terminate)
    signal.alarm(int(opts.timeout + 60))  # the last resort; the deadline normally ends first
    s3: Helper | None = None
    engine = None
    results: dict[str, Any] = {"setups": {}, "options": {k: str(v) for k, v in vars(opts).items()}}
    try:
        log(f"logs in {opts.log_dir}")
        log("rendering the invoice pool")
        pool = [PoolItem(common.invoice_pdf(seed)) for seed in range(1, INVOICE_POOL + 1)]
        scanned_pool: list[PoolItem] = []
        answers: Path | None = None
        if "scanned" in opts.setups:
            scanned_pool, answers = scanned_pool_and_answers(opts)
            results["scanned steps"] = scanned_steps(opts.scanned_pool)
        database = opts.database_url.rsplit("/", 1)[-1]
        log(f"resetting database {database} and Redis {opts.broker_url}")
        reset_database(opts.database_url)
        engine = create_engine(opts.database_url, pool_size=2)
        s3 = start_helper(
            "s3", ["bench.fakeaws", *(["--moto"] if opts.aws == "moto" else [])], opts.log_dir
        )
        for setup in setups_for(opts):
            if time.monotonic() > deadline:
                log(f"no time left for {setup.name}")
                break
            empty_tables(engine)
            flush_redis(opts.broker_url)
            log(
                f"=== {setup.title}: {setup.docs} documents, limit {setup.limit}, "
                f"latency {opts.latency_dist} mean {opts.latency_mean}s"
            )
            one = (
                SetupRun(opts, setup, s3, engine, scanned_pool, deadline, answers)
                if setup.scanned
                else SetupRun(opts, setup, s3, engine, pool, deadline)
            )
            try:
                figures = one.run()
            except RuntimeError as exc:
                log(f"{setup.name} failed: {exc}")
                figures = {**one.figures, "error": str(exc)}
            finally:
                one.stop()
            figures["log counts"] = scan_logs([p.log_path for p in one.processes])
            results["setups"][setup.name] = figures
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old_alarm)
        signal.signal(signal.SIGTERM, old_term)
        if s3 is not None:
            s3.stop()
        if engine is not None:
            engine.dispose()
        try:
            flush_redis(opts.broker_url)
        except Exception as exc:  # noqa: BLE001 — best effort at the end
            log(f"could not flush Redis at the end: {exc}")
    results["seconds"] = time.monotonic() - started
    results["cores"] = common.cores()
    summarise(opts, results)
    return results


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    results = run(opts)
    for line in (headline(results), scanned_headline(results)):
        if line:
            print(line)
    ok = all("pages/min" in f and not f.get("timed out") for f in results["setups"].values())
    return 0 if ok and len(results["setups"]) == len(opts.setups) else 1
