"""Throughput benchmark: uploads → bucket events → intake → workers → Postgres, against a fake
model provider with a latency distribution and a provider concurrency limit.

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
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Group, log

DEFAULT_DATABASE = "pagemill_bench"
DEFAULT_REDIS_DB = 12
FINAL = ("done", "failed", "needs_review")
INVOICE_POOL = 40  # distinct invoices (rendering one costs ~0.1 s); keys are unique anyway
UPLOAD_THREADS = 8


# --- options ----------------------------------------------------------------------------------


@dataclass
class Options:
    setups: list[str]
    docs: int
    naive_docs: int
    high_docs: int
    scanned_docs: int
    scanned_pool: int
    limit: int
    high_limit: int
    latency_mean: float
    latency_dist: str
    latency_spread: float
    prepare_concurrency: int
    naive_concurrency: int
    latency_docs: int
    latency_load: float
    warmup_docs: int
    setup_timeout: float
    timeout: float
    database_url: str
    broker_url: str
    aws: str
    concurrency_env: bool
    log_dir: Path
    argv: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="End-to-end throughput against a fake model provider.",
    )
    parser.add_argument(
        "--setups",
        default="fitted,naive,high,scanned",
        help="comma-separated: fitted, naive, high, scanned",
    )
    parser.add_argument(
        "--docs", type=int, default=600, help="one-page documents in the fitted run"
    )
    parser.add_argument(
        "--naive-docs",
        type=int,
        default=24,
        help="documents in the naive run (it does ~40 pages/min)",
    )
    parser.add_argument(
        "--high-docs", type=int, default=800, help="documents in the 200-in-flight run"
    )
    parser.add_argument(
        "--scanned-docs",
        type=int,
        default=160,
        help="documents in the scanned run (invoice scans and receipt photos)",
    )
    parser.add_argument(
        "--scanned-pool",
        type=int,
        default=24,
        help="distinct scanned documents the uploads cycle through",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=64,
        help="provider concurrency limit (PAGEMILL_RATE_LIMITS inflight)",
    )
    parser.add_argument("--high-limit", type=int, default=200)
    parser.add_argument("--latency-mean", type=float, default=3.0, help="seconds per model call")
    parser.add_argument(
        "--latency-dist", choices=("fixed", "uniform", "lognormal"), default="lognormal"
    )
    parser.add_argument(
        "--latency-spread", type=float, default=0.3, help="uniform: ± seconds; lognormal: sigma"
    )
    parser.add_argument("--prepare-concurrency", type=int, default=2)
    parser.add_argument("--naive-concurrency", type=int, default=2)
    parser.add_argument(
        "--latency-docs",
        type=int,
        default=40,
        help="documents in the fitted set-up's unsaturated phase (0: skip)",
    )
    parser.add_argument(
        "--latency-load",
        type=float,
        default=0.25,
        help="unsaturated phase: upload rate as a share of the provider bound",
    )
    parser.add_argument("--warmup-docs", type=int, default=6)
    parser.add_argument(
        "--setup-timeout", type=float, default=420.0, help="hard limit per set-up, seconds"
    )
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="hard limit for the whole run, seconds"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"default: PAGEMILL_DATABASE_URL's server, db {DEFAULT_DATABASE}",
    )
    parser.add_argument(
        "--broker-url",
        default=None,
        help=f"default: PAGEMILL_BROKER_URL's server, db {DEFAULT_REDIS_DB}",
    )
    parser.add_argument(
        "--aws",
        choices=("fake", "moto"),
        default="fake",
        help="S3 + SQS server: bench.fakeaws (default) or moto (~10x the CPU)",
    )
    parser.add_argument(
        "--no-concurrency-env",
        dest="concurrency_env",
        action="store_false",
        help="start workers with --concurrency only, without setting "
        "PAGEMILL_WORKER_CONCURRENCY (which sizes the broker pool)",
    )
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from sqlalchemy.engine import make_url

    from pipeline.settings import load_settings

    settings = load_settings()
    database_url = args.database_url or make_url(settings.database_url).set(
        database=DEFAULT_DATABASE
    ).render_as_string(hide_password=False)
    broker_url = args.broker_url or re.sub(
        r"(/\d+)?$", f"/{DEFAULT_REDIS_DB}", settings.broker_url, count=1
    )
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(setups) - {"fitted", "naive", "high", "scanned"}
    if unknown:
        parser.error(f"unknown set-up(s): {', '.join(sorted(unknown))}")
    return Options(
        setups=setups,
        docs=args.docs,
        naive_docs=args.naive_docs,
        high_docs=args.high_docs,
        scanned_docs=args.scanned_docs,
        scanned_pool=args.scanned_pool,
        limit=args.limit,
        high_limit=args.high_limit,
        latency_mean=args.latency_mean,
        latency_dist=args.latency_dist,
        latency_spread=args.latency_spread,
        prepare_concurrency=args.prepare_concurrency,
        naive_concurrency=args.naive_concurrency,
        latency_docs=args.latency_docs,
        latency_load=args.latency_load,
        warmup_docs=args.warmup_docs,
        setup_timeout=args.setup_timeout,
        timeout=args.timeout,
        database_url=database_url,
        broker_url=broker_url,
        aws=args.aws,
        concurrency_env=args.concurrency_env,
        log_dir=args.log_dir or Path(tempfile.mkdtemp(prefix="pagemill-bench-")),
        argv=list(argv if argv is not None else sys.argv[1:]),
    )


# --- helper processes -------------------------------------------------------------------------


@dataclass
class Helper:
    """A process of ours that prints one line (its URL) when ready."""

    name: str
    popen: subprocess.Popen[str]
    url: str

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


def start_helper(name: str, args: list[str], log_dir: Path, timeout: float = 60.0) -> Helper:
    log_dir.mkdir(parents=True, exist_ok=True)
    stderr = (log_dir / f"{name}.log").open("w")
    popen = subprocess.Popen(
        [sys.executable, "-m", *args],
        cwd=common.REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=stderr,
        stdin=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    stderr.close()
    result: list[str] = []
    reader = threading.Thread(
        target=lambda: result.append((popen.stdout.readline() if popen.stdout else "").strip()),
        daemon=True,
    )
    reader.start()
    reader.join(timeout)
    if not result or not result[0]:
        helper = Helper(name, popen, "")
        helper.stop()
        raise RuntimeError(f"{name} did not start; see {log_dir / (name + '.log')}")
    return Helper(name, popen, result[0])


# --- the database and the broker --------------------------------------------------------------


def reset_database(database_url: str) -> None:
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    from pipeline.db.migrate import upgrade

    url = make_url(database_url)
    admin = create_engine(url.set(database="postgres"), isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{url.database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{url.database}"'))
    finally:
        admin.dispose()
    import logging

    logging.getLogger("alembic").setLevel(logging.WARNING)
    upgrade(database_url)


def empty_tables(engine: Any) -> None:
    from sqlalchemy import text

    with engine.begin() as conn:
        conn.execute(text("TRUNCATE documents RESTART IDENTITY CASCADE"))


def flush_redis(broker_url: str) -> None:
    import redis

    client = redis.Redis.from_url(broker_url)
    try:
        client.flushdb()
    finally:
        client.close()


# --- uploads ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class PoolItem:
    """One document the uploads cycle through."""

    data: bytes
    content_type: str = "application/pdf"
    extension: str = "pdf"
    schema: str | None = None  # sent as x-amz-meta-pagemill-schema


def pool_keys(prefix: str, count: int, pool: list[PoolItem]) -> list[str]:
    """Keys for `count` uploads; a document with its own schema goes under PREFIX/SCHEMA/, which
    the scanned set-up routes (the S3 server here keeps no object metadata)."""
    keys = []
    for i in range(count):
        item = pool[i % len(pool)]
        folder = f"{prefix}/{item.schema}" if item.schema else prefix
        keys.append(f"{folder}/{i:06d}.{item.extension}")
    return keys


SCANNED_ROUTES = ";".join(f"{p}/receipt/=receipt" for p in ("warmup", "latency", "load"))


class Uploader:
    def __init__(self, settings: Any, bucket: str, pool: list[PoolItem]) -> None:
        from pipeline import storage

        self.bucket = bucket
        self.pool = pool
        self._local = threading.local()
        self._settings = settings
        self._storage = storage

    def _client(self) -> Any:
        client = getattr(self._local, "s3", None)
        if client is None:
            client = self._local.s3 = self._storage.make_s3_client(self._settings)
        return client

    def put(self, key: str, index: int) -> float:
        from pipeline.routing import METADATA_KEY

        item = self.pool[index % len(self.pool)]
        self._client().put_object(
            Bucket=self.bucket,
            Key=key,
            Body=item.data,
            ContentType=item.content_type,
            Metadata={METADATA_KEY: item.schema} if item.schema else {},
        )
        return time.time()

    def bulk(self, keys: list[str]) -> dict[str, float]:
        with ThreadPoolExecutor(UPLOAD_THREADS) as pool:
            times = list(pool.map(self.put, keys, range(len(keys))))
        return dict(zip(keys, times, strict=True))

    def paced(self, keys: list[str], interval: float) -> dict[str, float]:
        times: dict[str, float] = {}
        start = time.monotonic()
        for n, key in enumerate(keys):
            delay = start + n * interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            times[key] = self.put(key, n)
        return times


# --- one set-up -------------------------------------------------------------------------------


@dataclass
class Setup:
    name: str
    title: str
    limit: int
    docs: int
    workers: list[tuple[str, list[str], int]]  # (name, worker args, PAGEMILL_WORKER_CONCURRENCY)
    latency_docs: int = 0
    slots: int = 0  # calls the set-up can have in flight: min(limit, extract concurrency)
    scanned: bool = False  # scanned documents, OCR'd for grounding


def setups_for(opts: Options) -> list[Setup]:
    p = opts.prepare_concurrency
    fitted = lambda name, title, limit, docs, latency_docs: Setup(  # noqa: E731
        name=name,
        title=title,
        limit=limit,
        docs=docs,
        latency_docs=latency_docs,
        slots=limit,
        workers=[
            (
                "prepare worker",
                ["worker", "--queues", "prepare", "--pool", "prefork", "--concurrency", str(p)],
                p,
            ),
            (
                "extract worker",
                ["worker", "--queues", "extract", "--pool", "threads", "--concurrency", str(limit)],
                limit,
            ),
        ],
    )
    table = {
        "fitted": fitted(
            "fitted",
            f"fitted: prefork prepare c={p} + threads extract c={opts.limit}",
            opts.limit,
            opts.docs,
            opts.latency_docs,
        ),
        "naive": Setup(
            name="naive",
            title=f"naive: one prefork worker, all queues, c={opts.naive_concurrency}",
            limit=opts.limit,
            docs=opts.naive_docs,
            slots=min(opts.limit, opts.naive_concurrency),
            workers=[
                (
                    "worker (all queues)",
                    ["worker", "--pool", "prefork", "--concurrency", str(opts.naive_concurrency)],
                    opts.naive_concurrency,
                ),
            ],
        ),
        "high": fitted(
            "high",
            f"high: prefork prepare c={p} + threads extract c={opts.high_limit}",
            opts.high_limit,
            opts.high_docs,
            0,
        ),
        "scanned": replace(
            fitted(
                "scanned",
                f"scanned: prefork prepare c={p} + threads extract c={opts.limit}, invoice scans "
                "and receipt photos, OCR for grounding",
                opts.limit,
                opts.scanned_docs,
                0,
            ),
            scanned=True,
        ),
    }
    return [table[name] for name in opts.setups]


_WORKER_READY = re.compile(r"celery@\S+ ready")
_INGEST_READY = "consuming bucket events"
_LOG_PATTERNS = {
    "lost acks": re.compile(r"Couldn't ack|MaxConnectionsError|Connection pool exhausted"),
    "task retries": re.compile(r"; retry \d+ in "),
    "rate-limit waits gave up": re.compile(r"over its shared rate limit"),
    "worker lost": re.compile(r"WorkerLostError"),
    "errors": re.compile(r"\b(ERROR|CRITICAL)\b"),
}


def _scan_logs(paths: list[Path]) -> dict[str, int]:
    counts = dict.fromkeys(_LOG_PATTERNS, 0)
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for name, pattern in _LOG_PATTERNS.items():
            counts[name] += len(pattern.findall(text))
    return counts


class SetupRun:
    """Runs one set-up from start to stop; `figures` holds what it measured."""

    def __init__(
        self,
        opts: Options,
        setup: Setup,
        s3: Helper,
        engine: Any,
        pool: list[PoolItem],
        deadline: float,
        answers: Path | None = None,
    ) -> None:
        self.opts, self.setup, self.engine = opts, setup, engine
        self.s3_url, self.s3_pid = s3.url, s3.popen.pid
        self.pool = pool
        self.answers = answers
        self.deadline = min(deadline, time.monotonic() + opts.setup_timeout)
        self.log_dir = opts.log_dir / setup.name
        self.processes: list[Any] = []
        self.provider: Helper | None = None
        self.figures: dict[str, Any] = {"setup": setup.name, "title": setup.title}

    # -- processes --

    def _env(self, queue_url: str, provider_url: str) -> dict[str, str]:
        from workers import devstack

        return {
            **devstack.DUMMY_CREDENTIALS,
            "PAGEMILL_DATABASE_URL": self.opts.database_url,
            "PAGEMILL_BROKER_URL": self.opts.broker_url,
            "PAGEMILL_RATE_LIMIT_REDIS_URL": self.opts.broker_url,
            "PAGEMILL_S3_ENDPOINT_URL": self.s3_url,
            "PAGEMILL_SQS_QUEUE_URL": queue_url,
            "PAGEMILL_SQS_WAIT_SECONDS": "1",
            "PAGEMILL_PROVIDER": "anthropic",
            "PAGEMILL_ANTHROPIC_API_KEY": "bench-not-a-real-key",
            "PAGEMILL_ANTHROPIC_BASE_URL": provider_url,
            "PAGEMILL_RATE_LIMITS": f"anthropic:*=inflight:{self.setup.limit}",
            # Digital pages have their words; scans are OCR'd for grounding.
            "PAGEMILL_OCR_SCANNED_PAGES": "true" if self.setup.scanned else "false",
            **({"PAGEMILL_SCHEMA_ROUTES": SCANNED_ROUTES} if self.setup.scanned else {}),
        }

    def _wait_ready(self, process: Any, marker: Callable[[str], bool]) -> None:
        limit = min(self.deadline, time.monotonic() + 120)
        while time.monotonic() < limit:
            if not process.alive():
                raise RuntimeError(f"{process.name} exited:\n{process.tail()}")
            try:
                if marker(process.log_path.read_text(errors="replace")):
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"{process.name} not ready in time:\n{process.tail()}")

    def _bucket(self, phase: str) -> tuple[str, str]:
        """A fresh bucket wired to a fresh SQS queue; (bucket, queue URL)."""
        from pipeline import storage

        bucket = f"bench-{self.setup.name}-{phase}-{int(time.time())}"
        queue_url = storage.ensure_bucket_notifications(
            self.s3, self.sqs, bucket, f"{bucket}-events"
        )
        return bucket, queue_url

    def start(self) -> tuple[Any, Any]:
        from pipeline import storage
        from tests.support.s3_server import settings_for
        from workers import devstack

        self.stats_file = self.log_dir / "provider-stats.json"
        self.log_dir.mkdir(parents=True, exist_ok=True)
        self.provider = start_helper(
            "provider",
            [
                "bench.provider",
                "--latency-mean",
                str(self.opts.latency_mean),
                "--latency-dist",
                self.opts.latency_dist,
                "--latency-spread",
                str(self.opts.latency_spread),
                "--stats-file",
                str(self.stats_file),
                *(["--answers", str(self.answers)] if self.answers else []),
            ],
            self.log_dir,
        )
        self.settings = settings_for(self.s3_url)
        self.s3 = storage.make_s3_client(self.settings)
        self.sqs = storage.make_sqs_client(self.settings)
        self.bucket, queue_url = self._bucket("warm")
        self.env = self._env(queue_url, self.provider.url)
        ingest = devstack.spawn("ingest", ["ingest"], self.env, self.log_dir)
        self.processes.append(ingest)
        workers = []
        for name, args, concurrency in self.setup.workers:
            worker_env = dict(self.env)
            if self.opts.concurrency_env:
                worker_env["PAGEMILL_WORKER_CONCURRENCY"] = str(concurrency)
            proc = devstack.spawn(
                re.sub(r"[^a-z]+", "-", name).strip("-"), args, worker_env, self.log_dir
            )
            proc.name = name
            self.processes.append(proc)
            workers.append(proc)
        self._wait_ready(ingest, lambda text: _INGEST_READY in text)
        for proc in workers:
            self._wait_ready(proc, lambda text: bool(_WORKER_READY.search(text)))
        self.uploader = Uploader(self.settings, self.bucket, self.pool)
        return ingest, workers

    def stop(self) -> None:
        for process in self.processes:
            try:
                process.stop(timeout=20)
            except Exception as exc:  # noqa: BLE001 — keep stopping the others
                log(f"could not stop {process.name}: {exc}")
        if self.provider is not None:
            self.provider.stop()

    # -- waiting and reading results --

    def _final_count(self, bucket: str, prefix: str) -> int:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return int(
                conn.execute(
                    text(
                        "SELECT count(*) FROM documents WHERE bucket = :b AND key LIKE :p"
                        " AND status = ANY(:f)"
                    ),
                    {"b": bucket, "p": prefix + "%", "f": list(FINAL)},
                ).scalar_one()
            )

    def _wait(
        self, bucket: str, prefix: str, count: int, tick: Callable[[], None] | None = None
    ) -> int:
        done = 0
        last_report = time.monotonic()
        while True:
            done = self._final_count(bucket, prefix)
            if tick is not None:
                tick()
            if done >= count:
                return done
            if time.monotonic() > self.deadline:
                log(f"{self.setup.name}: TIMED OUT with {done}/{count} {prefix} documents final")
                return done
            dead = [p for p in self.processes if not p.alive()]
            if dead:
                raise RuntimeError(f"{dead[0].name} exited:\n{dead[0].tail()}")
            if time.monotonic() - last_report > 15:
                log(f"{self.setup.name}: {done}/{count} {prefix} documents final")
                last_report = time.monotonic()
            time.sleep(0.25)

    def _rows(self, bucket: str, prefix: str) -> list[Any]:
        from sqlalchemy import text

        with self.engine.connect() as conn:
            return list(
                conn.execute(
                    text("""
                    SELECT d.key, d.status, coalesce(d.page_count, 0) AS pages,
                           extract(epoch FROM d.created_at)::float8 AS created,
                           extract(epoch FROM d.finished_at)::float8 AS finished,
                           (SELECT extract(epoch FROM max(p.created_at))::float8
                              FROM pages p WHERE p.document_id = d.id) AS prepared,
                           coalesce(sum(c.latency_ms), 0)::float8 / 1000 AS model_s,
                           count(c.id) AS calls,
                           count(c.id) FILTER (WHERE c.outcome = 'ok') AS ok_calls
                      FROM documents d LEFT JOIN vlm_calls c ON c.document_id = d.id
                     WHERE d.bucket = :b AND d.key LIKE :p
                     GROUP BY d.id
                """),
                    {"b": bucket, "p": prefix + "%"},
                )
            )

    def _provider_stats(self) -> dict[str, Any] | None:
        import json

        try:
            return dict(json.loads(self.stats_file.read_text()))
        except (OSError, ValueError):
            return None

    # -- the run --

    def run(self) -> dict[str, Any]:
        from workers import devstack

        opts, setup, fig = self.opts, self.setup, self.figures
        ingest, workers = self.start()
        ingest_group = Group("ingest", [ingest.popen.pid])
        groups = [
            ingest_group,
            *[Group(w.name, [w.popen.pid]) for w in workers],
            Group("fake provider", [self.provider.popen.pid] if self.provider else []),
            Group(f"S3+SQS ({opts.aws})", [self.s3_pid]),
            Group("bench driver", match=lambda pid, comm: pid == os.getpid()),
            Group(
                "postgres (bench db)",
                match=common.postgres_backends(opts.database_url.rsplit("/", 1)[-1].split("?")[0]),
            ),
            Group("redis", match=common.redis_server(_redis_port(opts.broker_url))),
            # The prefork pool's parent alone (its children are in the group above).
            *[
                Group(f"{w.name}: main process", [w.popen.pid], own_only=True)
                for w in workers
                if "prefork" in w.popen.args
            ],
        ]
        worker_names = [w.name for w in workers]
        pipeline_names = ["ingest", *worker_names]
        memory = common.MemorySampler(groups[: 1 + len(workers)])
        memory.start()

        # Warm-up: imports, pools and the first task of each pool process are paid here.
        warm = pool_keys("warmup", opts.warmup_docs, self.pool)
        self.uploader.bulk(warm)
        self._wait(self.bucket, "warmup/", len(warm))

        ideal_per_min = setup.limit / opts.latency_mean * 60
        fig["slots"] = setup.slots
        fig["slots pages/min"] = setup.slots / opts.latency_mean * 60
        if setup.latency_docs > 0:
            rate = opts.latency_load * setup.limit / opts.latency_mean  # documents per second
            keys = pool_keys("latency", setup.latency_docs, self.pool)
            log(f"{setup.name}: unsaturated phase, {len(keys)} documents at {rate:.1f}/s")
            uploaded = self.uploader.paced(keys, 1.0 / rate)
            self._wait(self.bucket, "latency/", len(keys))
            fig["unsaturated"] = self._latencies(self._rows(self.bucket, "latency/"), uploaded)
            fig["unsaturated"]["upload rate (docs/s)"] = rate

        # The load: every document uploaded first (their events wait in a queue of their own,
        # as a burst would), then a second intake starts on that queue. Uploading is the S3
        # server's work, not the pipeline's, so it stays out of the measured CPU.
        load_bucket, load_queue = self._bucket("load")
        keys = pool_keys("load", setup.docs, self.pool)
        log(f"{setup.name}: uploading {len(keys)} documents")
        staged = time.monotonic()
        uploaded = Uploader(self.settings, load_bucket, self.pool).bulk(keys)
        fig["upload rate (docs/s)"] = len(keys) / max(time.monotonic() - staged, 1e-9)
        samples: list[tuple[float, common.CpuReading, dict[str, Any] | None]] = []
        last_sample = [0.0]

        def tick() -> None:
            if time.monotonic() - last_sample[0] >= 1.0:
                samples.append((time.time(), common.read_cpu(groups), self._provider_stats()))
                last_sample[0] = time.monotonic()

        log(f"{setup.name}: starting intake of {len(keys)} bucket events")
        intake = devstack.spawn(
            "ingest-load", ["ingest", "--queue-url", load_queue], self.env, self.log_dir
        )
        self.processes.append(intake)
        ingest_group.roots.append(intake.popen.pid)
        limit = time.monotonic() + 120
        while _INGEST_READY not in intake.log_path.read_text(errors="replace"):
            if not intake.alive() or time.monotonic() > limit:
                raise RuntimeError(f"intake did not start:\n{intake.tail()}")
            time.sleep(0.05)
        intake_started = time.time()
        tick()
        start_reading = samples[0][1]
        final = self._wait(load_bucket, "load/", len(keys), tick)
        last_sample[0] = 0.0
        tick()
        end_reading = samples[-1][1]
        memory.stop()
        rows = self._rows(load_bucket, "load/")
        fig["timed out"] = final < len(keys)
        # An event cannot be consumed before the intake starts: that is the upload time here.
        effective = {k: max(t, intake_started) for k, t in uploaded.items()}
        fig.update(self._throughput(rows, effective, samples, ideal_per_min))
        cpu = common.cpu_delta(start_reading, end_reading)
        pages = sum(r.pages for r in rows if r.status in FINAL) or 1
        fig["cpu s"] = cpu
        fig["pages"] = pages
        fig["worker cpu ms/page"] = 1000 * sum(cpu[n] for n in worker_names) / pages
        fig["pipeline cpu ms/page"] = 1000 * sum(cpu[n] for n in pipeline_names) / pages
        ours = [g.name for g in groups if not g.own_only]
        fig["accounted cpu ms/page"] = 1000 * sum(cpu[n] for n in ours) / pages
        fig["other load (cores)"] = max(0.0, cpu["machine busy"] - sum(cpu[n] for n in ours)) / max(
            cpu["wall"], 1e-9
        )
        fig["peak pss MB"] = {n: memory.peak_pss_kb[n] / 1024 for n in memory.peak_pss_kb}
        fig["peak hwm MB"] = {n: memory.peak_hwm_kb[n] / 1024 for n in memory.peak_hwm_kb}
        fig["worker names"] = worker_names
        return fig

    def _latencies(self, rows: list[Any], uploaded: dict[str, float]) -> dict[str, Any]:
        finished = [r for r in rows if r.finished is not None and r.key in uploaded]
        e2e = [r.finished - uploaded[r.key] for r in finished]
        overhead = [r.finished - uploaded[r.key] - r.model_s for r in finished]
        intake = [r.created - uploaded[r.key] for r in finished]
        prepare = [r.prepared - r.created for r in finished if r.prepared]
        after_prepare = [r.finished - r.prepared - r.model_s for r in finished if r.prepared]
        return {
            "documents": len(finished),
            "statuses": _count(r.status for r in rows),
            "e2e p50 s": common.percentile(e2e, 50),
            "e2e p95 s": common.percentile(e2e, 95),
            "model s p50": common.percentile([r.model_s for r in finished], 50),
            "overhead p50 s": common.percentile(overhead, 50),
            "overhead p95 s": common.percentile(overhead, 95),
            "intake p95 s": common.percentile(intake, 95),
            "prepare (incl. queue) p95 s": common.percentile(prepare, 95),
            "extract minus model (incl. queue) p95 s": common.percentile(after_prepare, 95),
        }

    def _throughput(
        self,
        rows: list[Any],
        uploaded: dict[str, float],
        samples: list[tuple[float, Any, Any]],
        ideal_per_min: float,
    ) -> dict[str, Any]:
        done = sorted((r for r in rows if r.finished is not None), key=lambda r: r.finished)
        out: dict[str, Any] = self._latencies(rows, uploaded)
        out["calls per document"] = (sum(r.calls for r in rows) / len(rows)) if rows else 0.0
        out["ideal pages/min"] = ideal_per_min
        if len(done) < 4:
            out["pages/min"] = out["overall pages/min"] = out["ratio to ideal"] = 0.0
            return out
        # Steady state: between the 10th and the 90th percentile of completions, so that the
        # ramp-up (the first calls take a whole latency) and the tail do not count.
        lo, hi = done[len(done) // 10], done[(len(done) * 9) // 10]
        pages_between = sum(r.pages for r in done[len(done) // 10 + 1 : (len(done) * 9) // 10 + 1])
        span = max(hi.finished - lo.finished, 1e-9)
        out["pages/min"] = pages_between / span * 60
        first_upload = min(uploaded.values()) if uploaded else done[0].created
        out["overall pages/min"] = (
            sum(r.pages for r in done) / max(done[-1].finished - first_upload, 1e-9) * 60
        )
        out["ratio to ideal"] = out["pages/min"] / ideal_per_min
        out["window s"] = span
        # The provider's mean concurrency and our CPU over the same window.
        before = _nearest(samples, lo.finished)
        after = _nearest(samples, hi.finished)
        if before is not None and after is not None and after[0] > before[0]:
            if before[2] and after[2]:
                dt = after[2]["at"] - before[2]["at"]
                out["mean in flight"] = (
                    (after[2]["in_flight_area_s"] - before[2]["in_flight_area_s"]) / dt
                    if dt > 0
                    else float("nan")
                )
                out["peak in flight"] = after[2]["in_flight_peak"]
            cpu = common.cpu_delta(before[1], after[1])
            out["window cpu s"] = cpu
        return out


def _nearest(samples: list[tuple[float, Any, Any]], at: float) -> tuple[float, Any, Any] | None:
    return min(samples, key=lambda s: abs(s[0] - at)) if samples else None


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts


def _redis_port(url: str) -> int:
    match = re.search(r":(\d+)(/|$)", url.rsplit("@", maxsplit=1)[-1])
    return int(match.group(1)) if match else 6379


# --- the scanned workload -------------------------------------------------------------------


def _scanned_pool(opts: Options) -> tuple[list[PoolItem], Path]:
    """The scanned documents, and the fake provider's answers keyed by first-page image."""
    import json

    from bench import scans

    log(f"generating {opts.scanned_pool} scanned documents")
    docs = scans.workload(opts.scanned_pool)
    pool = [PoolItem(d.data, d.content_type, d.extension, d.schema) for d in docs]
    answers = {scans.answer_key(d): d.fields for d in docs}
    if len(answers) < len(docs):
        raise RuntimeError("two scanned documents send the same first image")
    opts.log_dir.mkdir(parents=True, exist_ok=True)
    path = opts.log_dir / "scanned-answers.json"
    path.write_text(json.dumps(answers))
    return pool, path


STEP_ORDER = ("model image", "decode", "preprocess", "detect", "recognise", "ground")


def scanned_steps(count: int) -> dict[str, Any]:
    """CPU per scanned page by step, measured in this process (this thread's CPU) on the
    scanned pool, as the pipeline runs them: the model's image (render + JPEG, `page()`), the
    OCR for grounding with the fast setting (decode, preprocess, detect, recognise), and
    grounding plus rules on the answer. Also the share of the answers' values grounded."""
    from bench import scans
    from pipeline import ocr
    from pipeline.pages import Limits, opened
    from pipeline.schemas import get_schema
    from pipeline.settings import Settings
    from pipeline.usecases.process import ensure_words
    from pipeline.usecases.verify import verify
    from pipeline.validation import validate

    settings = Settings()
    docs = scans.workload(count)
    with opened(docs[0].data, Limits()) as source:  # the engine's one-off model load
        ensure_words(source.page(0), source, settings, for_extraction=False)
    totals = dict.fromkeys(STEP_ORDER, 0.0)
    pages = values = grounded = 0
    for doc in docs:
        with opened(doc.data, Limits()) as source:
            start = time.thread_time()
            contents = [source.page(i) for i in range(source.page_count)]
            totals["model image"] += time.thread_time() - start
            ocr.step_cpu(reset=True)
            for page in contents:
                ensure_words(page, source, settings, for_extraction=False)
            for step, seconds in ocr.step_cpu(reset=True).items():
                totals[step] = totals.get(step, 0.0) + seconds
        schema = get_schema(doc.schema)
        checked = validate(schema, doc.fields)  # the pipeline grounds the validated answer
        start = time.thread_time()
        verdict = verify(schema, checked.data() if checked.ok else doc.fields, contents)
        totals["ground"] += time.thread_time() - start
        pages += len(contents)
        values += len(verdict.grounding)
        grounded += sum(1 for found in verdict.grounding.values() if isinstance(found, dict))
    return {
        "documents": len(docs),
        "pages": pages,
        "ms/page": {k: 1000 * v / max(pages, 1) for k, v in totals.items()},
        "total ms/page": 1000 * sum(totals.values()) / max(pages, 1),
        "values": values,
        "grounded": grounded,
    }


# --- the whole benchmark --------------------------------------------------------------------


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
            scanned_pool, answers = _scanned_pool(opts)
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
            figures["log counts"] = _scan_logs([p.log_path for p in one.processes])
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


# --- report ---------------------------------------------------------------------------------


def _window(fig: dict[str, Any]) -> tuple[dict[str, float], float]:
    """CPU seconds per group and pages done over the whole load phase. (Not the steady window
    alone: when the provider is the bound, the prepare stage finishes early and the window
    would hold extract work only.)"""
    return fig["cpu s"], float(fig["pages"])


def _names(fig: dict[str, Any]) -> list[str]:
    """Every process group this benchmark accounts for (not the per-process detail rows)."""
    return [n for n in fig["cpu s"] if n not in ("machine busy", "wall") and ":" not in n]


def other_load(fig: dict[str, Any]) -> float:
    """Cores that processes outside this benchmark used during the load phase."""
    cpu, _ = _window(fig)
    ours = sum(cpu.get(n, 0.0) for n in _names(fig))
    return max(0.0, cpu["machine busy"] - ours) / max(cpu["wall"], 1e-9)


def _ceiling(fig: dict[str, Any], names: list[str], cores: float | None = None) -> float:
    """Pages/min if `names` had `cores` (default: every core) to themselves, at the CPU per page
    they used in the load phase."""
    cpu, pages = _window(fig)
    used = sum(cpu.get(n, 0.0) for n in names)
    return (cores or common.cores()) * 60 * pages / used if used > 0 else float("nan")


def bound_of(fig: dict[str, Any]) -> tuple[str, float, float]:
    """(bound, its pages/min, throughput ÷ bound): the provider's bound (limit ÷ latency), the
    set-up's own (processes ÷ latency, naive), or the CPU ceiling measured in the same run,
    whichever is lowest. The CPU ceiling is what every process this benchmark runs (pipeline,
    fake provider, S3 server, Postgres, Redis, this driver) would do on the cores that were left
    to them: all cores minus what other jobs on the machine used meanwhile."""
    available = max(0.5, common.cores() - other_load(fig))
    cpu_ceiling = _ceiling(fig, _names(fig), available)
    ideal = fig["ideal pages/min"]
    slots = fig.get("slots pages/min", ideal)
    if cpu_ceiling < min(ideal, slots):
        return "cpu", cpu_ceiling, fig["pages/min"] / cpu_ceiling
    if slots < ideal:  # fewer calls in flight than the provider allows: one per process
        return "concurrency", slots, fig["pages/min"] / slots
    return "provider", ideal, fig["pages/min"] / ideal


def summarise(opts: Options, results: dict[str, Any]) -> None:
    setups = results["setups"]
    print()
    print(
        f"## throughput ({common.cores()} cores; latency {opts.latency_dist}, mean "
        f"{opts.latency_mean:g} s, spread {opts.latency_spread:g}; one-page invoices)"
    )
    print()
    rows = []
    for name, fig in setups.items():
        if "pages/min" not in fig:
            rows.append([name, "failed: " + fig.get("error", "?").splitlines()[0]])
            continue
        workers = fig["worker names"]
        pipeline = ["ingest", *workers]
        bound, bound_value, ratio = bound_of(fig)
        fig["bound"], fig["bound pages/min"], fig["ratio to bound"] = bound, bound_value, ratio
        fig["pipeline cpu ceiling pages/min"] = _ceiling(fig, pipeline)
        fig["cpu ceiling all cores pages/min"] = _ceiling(fig, _names(fig))
        fig["other load in window (cores)"] = other_load(fig)
        rows.append(
            [
                name,
                f"{fig['pages']}" + (" (TIMED OUT)" if fig.get("timed out") else ""),
                fig["pages/min"],
                fig["overall pages/min"],
                fig["ideal pages/min"],
                fig.get("ratio to ideal", float("nan")),
                f"{bound} {bound_value:,.0f}",
                ratio,
                fig.get("mean in flight", float("nan")),
                fig["e2e p50 s"],
                fig["e2e p95 s"],
                fig["worker cpu ms/page"],
                fig["pipeline cpu ms/page"],
                fig["accounted cpu ms/page"],
                " / ".join(f"{fig['peak pss MB'][w]:.0f}" for w in workers),
            ]
        )
    print(
        common.table(
            [
                "set-up",
                "pages",
                "pages/min (steady)",
                "pages/min (overall)",
                "ideal",
                "ratio",
                "bound",
                "ratio to bound",
                "mean in flight",
                "e2e p50 s",
                "e2e p95 s",
                "worker CPU ms/page",
                "pipeline CPU ms/page",
                "all CPU ms/page",
                "peak PSS MB/worker",
            ],
            rows,
        )
    )
    print()
    print(
        "pages/min (steady): completions between the 10th and 90th percentile; ideal: limit ÷ "
        "mean latency × 60; e2e: upload → documents.finished_at, where the upload time is when "
        "the intake started (all documents are uploaded first, then the intake is started on "
        "their events: this includes queueing); worker CPU: the worker process trees; "
        "pipeline: workers + intake; all: + fake provider, S3+SQS server, this driver, Postgres "
        "backends, Redis."
    )
    for name, fig in setups.items():
        if "cpu s" not in fig:
            continue
        print()
        print(f"### {name}: {fig['title']}")
        print()
        cpu = fig["cpu s"]
        pages = fig["pages"]
        print(
            common.table(
                ["process", "CPU s", "CPU ms/page", "peak PSS MB", "peak RSS (VmHWM) MB"],
                [
                    [
                        n if ":" not in n else f"  ({n}, included above)",
                        cpu[n],
                        1000 * cpu[n] / pages,
                        fig["peak pss MB"].get(n, float("nan")),
                        fig["peak hwm MB"].get(n, float("nan")),
                    ]
                    for n in cpu
                    if n not in ("machine busy", "wall")
                ]
                + [
                    [
                        "machine (all processes)",
                        cpu["machine busy"],
                        1000 * cpu["machine busy"] / pages,
                        None,
                        None,
                    ]
                ],
            )
        )
        extra = {
            "calls the set-up can have in flight": f"{fig['slots']} (÷ mean latency = "
            f"{fig['slots pages/min']:,.0f} pages/min)",
            "statuses": fig["statuses"],
            "calls per document": round(fig["calls per document"], 3),
            "upload rate docs/s": round(fig["upload rate (docs/s)"], 1),
            "peak in flight (provider)": fig.get("peak in flight"),
            "other jobs on the machine (cores)": f"{fig['other load (cores)']:.2f}",
            "CPU ceiling, all accounted processes on all cores (pages/min)": round(
                fig["cpu ceiling all cores pages/min"]
            ),
            "CPU ceiling, pipeline alone (workers + intake) on all cores (pages/min)": round(
                fig["pipeline cpu ceiling pages/min"]
            ),
            "log counts": fig.get("log counts"),
        }
        print()
        for k, v in extra.items():
            print(f"- {k}: {v}")
        if "unsaturated" in fig:
            u = fig["unsaturated"]
            print()
            print(
                f"unsaturated phase ({u['documents']} documents paced at "
                f"{u['upload rate (docs/s)']:.1f}/s, {opts.latency_load:.0%} of the bound):"
            )
            print()
            print(
                common.table(
                    [
                        "e2e p50 s",
                        "e2e p95 s",
                        "model call p50 s",
                        "overhead p50 s",
                        "overhead p95 s",
                        "intake p95 s",
                        "prepare+queue p95 s",
                        "extract-model+queue p95 s",
                    ],
                    [
                        [
                            u["e2e p50 s"],
                            u["e2e p95 s"],
                            u["model s p50"],
                            u["overhead p50 s"],
                            u["overhead p95 s"],
                            u["intake p95 s"],
                            u["prepare (incl. queue) p95 s"],
                            u["extract minus model (incl. queue) p95 s"],
                        ]
                    ],
                )
            )
    steps = results.get("scanned steps")
    if steps:
        print()
        print(
            f"### scanned: CPU per scanned page by step (this process, {steps['documents']} "
            f"documents, {steps['pages']} pages, fast OCR setting)"
        )
        print()
        per = steps["ms/page"]
        print(
            common.table(
                [*STEP_ORDER, "total"],
                [[*(per.get(k, 0.0) for k in STEP_ORDER), steps["total ms/page"]]],
            )
        )
        print()
        print(
            f"values grounded in the OCR words: {steps['grounded']}/{steps['values']} "
            f"({steps['grounded'] / max(steps['values'], 1):.1%}); the throughput run's own "
            "CPU per page includes Celery, the database, the model call's client side."
        )
    if (
        "fitted" in setups
        and "naive" in setups
        and "pages/min" in setups["naive"]
        and "pages/min" in setups["fitted"]
    ):
        f, n = setups["fitted"], setups["naive"]
        print()
        print(
            f"naive/fitted: throughput {n['pages/min'] / f['pages/min']:.3f} "
            f"(fitted is {f['pages/min'] / n['pages/min']:.1f}x), worker CPU per page "
            f"{n['worker cpu ms/page'] / f['worker cpu ms/page']:.2f}, "
            f"peak PSS {sum(n['peak pss MB'][w] for w in n['worker names']):.0f} MB vs "
            f"{sum(f['peak pss MB'][w] for w in f['worker names']):.0f} MB"
        )
    if "high" in setups and "pages/min" in setups["high"]:
        h = setups["high"]
        print(
            f"high ({opts.high_limit} in flight): {h['pages/min']:,.0f} pages/min = "
            f"{h['ratio to bound']:.2f} of its {h['bound']} bound "
            f"({h['bound pages/min']:,.0f} pages/min); provider bound "
            f"{h['ideal pages/min']:,.0f}; other jobs used "
            f"{h['other load in window (cores)']:.2f} cores; pipeline-only CPU ceiling on all "
            f"cores "
            f"{h['pipeline cpu ceiling pages/min']:,.0f}"
        )
    print()
    path = common.write_results("throughput", results)
    print(f"figures saved to {path.relative_to(common.REPO_ROOT)}")
    print(common.reproduce_line("bench.throughput", opts.argv))


def scanned_headline(results: dict[str, Any]) -> str | None:
    """`scanned ratio: X.XX (bound: provider|cpu), cpu per scanned page: N ms`: the scanned
    set-up's steady pages/min over its bound, and its pipeline CPU (workers + intake) per
    page."""
    fig = results["setups"].get("scanned", {})
    if "ratio to bound" not in fig:
        return None
    return (
        f"scanned ratio: {fig['ratio to bound']:.2f} (bound: {fig['bound']}), "
        f"cpu per scanned page: {fig['pipeline cpu ms/page']:.0f} ms"
    )


def headline(results: dict[str, Any]) -> str | None:
    """`throughput ratio: X.XX (bound: provider|cpu)` of the first set-up that has figures."""
    for name in ("fitted", "high", "naive"):
        fig = results["setups"].get(name, {})
        if "ratio to bound" in fig:
            return f"throughput ratio: {fig['ratio to bound']:.2f} (bound: {fig['bound']})"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    opts = parse_args(argv)
    results = run(opts)
    for line in (headline(results), scanned_headline(results)):
        if line:
            print(line)
    ok = all("pages/min" in f and not f.get("timed out") for f in results["setups"].values())
    return 0 if ok and len(results["setups"]) == len(opts.setups) else 1


if __name__ == "__main__":
    raise SystemExit(main())
