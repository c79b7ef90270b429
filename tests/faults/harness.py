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

* ``PAGEMILL_FAULT_OUTAGE_S`` (default 90): how long the database is down, or the provider
  answers 529;
* ``PAGEMILL_FAULT_SETTINGS``: ``scaled`` (default) scales the retry budget down to ~20 s (so a
  90 s outage outlasts it several times) and the waits between tries to 5 s; ``default`` runs
  the pipeline's own defaults (a budget of minutes, waits up to 5 minutes, a sweep a minute).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from pipeline.events import parse_bucket_event
from pipeline.synthetic import make_invoice, render_pdf
from tests.support.fake_model_server import FakeModelServer, RecordedRequest, Scripted, reply
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.services import PrivatePostgres, PrivateRedis
from workers import devstack, queues

FINAL = ("done", "failed", "needs_review")
REPORT_ENV = "PAGEMILL_FAULT_REPORT"
API_KEY = "sk-test-not-a-real-key"
_INVOICE_NUMBER = re.compile(r"INV-\d{4}-\d{5}")

# Short clocks so that recovery happens within a test: a lease outlives the task time limit,
# the broker's visibility timeout outlives a task plus its longest retry wait (the settings
# validate both), and the sweep runs every two seconds. workers/app.py derives the soft time
# limit as max(limit - 30, 10): 10 s here, below the 15 s hard limit, so that a slow task (a
# pool process's first, which pays for its imports) gets an exception instead of a SIGKILL.
RECOVERY_SETTINGS = {
    "PAGEMILL_TASK_TIME_LIMIT_S": "15",
    "PAGEMILL_LEASE_S": "17",
    "PAGEMILL_VISIBILITY_TIMEOUT_S": "60",
    "PAGEMILL_RETRY_BASE_S": "0.5",
    "PAGEMILL_RETRY_CAP_S": "5",
    "PAGEMILL_TASK_MAX_RETRIES": "20",
    "PAGEMILL_STUCK_AFTER_S": "10",
    "PAGEMILL_SWEEP_INTERVAL_S": "2",
    "PAGEMILL_ANTHROPIC_TIMEOUT_S": "8",
    "PAGEMILL_RATE_LIMITS": "",  # none unless a test sets one
}


OUTAGE_S = float(os.environ.get("PAGEMILL_FAULT_OUTAGE_S", "90"))
FULL_SETTINGS = os.environ.get("PAGEMILL_FAULT_SETTINGS", "scaled") == "default"

# The retry budget scaled down for the suite: at most 0.5 + 1 + 2 + 4 + 5 + 5 = 17.5 s of
# waits for six retries, so that an outage of 90 s outlasts it five times over; outage waits
# try again at most 5 s apart. The task time limit (soft: 120 s) lets an answer that arrived
# wait in its process for a database that is down for 90 s; the lease and the broker's
# visibility timeout outlast it, as the settings require. Stuck-document recovery stays at its
# default (30 min): nothing here may rely on it.
SCALED_OUTAGE_SETTINGS = {
    "PAGEMILL_TASK_MAX_RETRIES": "6",
    "PAGEMILL_RETRY_BASE_S": "0.5",
    "PAGEMILL_RETRY_CAP_S": "5",
    "PAGEMILL_WAIT_CAP_S": "5",
    "PAGEMILL_TASK_TIME_LIMIT_S": "150",
    "PAGEMILL_LEASE_S": "160",
    "PAGEMILL_VISIBILITY_TIMEOUT_S": "400",
    "PAGEMILL_SWEEP_INTERVAL_S": "2",
    "PAGEMILL_ANTHROPIC_TIMEOUT_S": "8",
}


def outage_settings(**overrides: str) -> dict[str, str]:
    """The settings of an outage test: the scaled ones, or none (the pipeline's defaults) when
    PAGEMILL_FAULT_SETTINGS=default; `overrides` either way."""
    return {**({} if FULL_SETTINGS else SCALED_OUTAGE_SETTINGS), **overrides}


def outage_timeout(settle_s: float = 120.0) -> float:
    """How long to wait for every document after an outage ended: the longest wait between
    tries (5 s scaled, 300 s by default), a sweep, and the work itself."""
    return settle_s + (330.0 if FULL_SETTINGS else 10.0)


class Figures(dict[str, Any]):
    """The figures of one run; keys starting with "_" hold raw rows for test-specific checks
    and stay out of reports and assertion messages."""

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in self.items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return repr(self.public())


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """`devstack.wait_for`, but a predicate that raises (a service is down) counts as False."""

    def safe() -> bool:
        try:
            return bool(predicate())
        except (SQLAlchemyError, OSError, redis.RedisError):
            return False

    return devstack.wait_for(safe, timeout, interval)


@dataclass
class InvoiceBook:
    """Which invoice went into which object, and a fake-server responder that answers with it."""

    by_number: dict[str, dict[str, Any]] = field(default_factory=dict)
    key_by_number: dict[str, str] = field(default_factory=dict)

    def add(self, key: str, seed: int) -> bytes:
        invoice = make_invoice(seed)
        self.by_number[invoice.invoice_number] = invoice.expected()
        self.key_by_number[invoice.invoice_number] = key
        return render_pdf(invoice)

    def number_in(self, request: RecordedRequest) -> str | None:
        for number in _INVOICE_NUMBER.findall(request.prompt_text()):
            if number in self.by_number:
                return number
        return None

    def key_for(self, request: RecordedRequest) -> str | None:
        number = self.number_in(request)
        return self.key_by_number.get(number) if number else None

    def responder(self, request: RecordedRequest) -> Scripted | None:
        number = self.number_in(request)
        return reply(fields=self.by_number[number]) if number else None


@dataclass
class FaultStack:
    env: dict[str, str]
    redis: PrivateRedis
    postgres: PrivatePostgres
    database_url: str
    engine: Engine
    bucket: BucketWithQueue
    server: FakeModelServer
    log_dir: Path
    book: InvoiceBook = field(default_factory=InvoiceBook)
    processes: list[devstack.Process] = field(default_factory=list)
    pushed: set[str] = field(default_factory=set)
    started: float = field(default_factory=time.monotonic)
    # Processes that died on their own while supervised: (name, exit code, last error line).
    crashes: list[tuple[str, int | None, str]] = field(default_factory=list)
    _supervised: list[list[Any]] = field(default_factory=list)
    _supervisor: threading.Thread | None = None
    _stopping: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    # --- processes ---------------------------------------------------------------------------

    @property
    def tmp_dir(self) -> Path:
        """The processes' temporary directory (TMPDIR), the test's own."""
        return Path(self.env["TMPDIR"])

    def use_settings(self, settings: dict[str, str]) -> None:
        """Replace the short recovery clocks (RECOVERY_SETTINGS) by `settings`, for the
        processes spawned from now on."""
        for name in RECOVERY_SETTINGS:
            if name != "PAGEMILL_RATE_LIMITS":
                self.env.pop(name, None)
        self.env.update(settings)

    def spawn(
        self, name: str, args: list[str], *, supervised: bool = False, **extra_env: str
    ) -> devstack.Process:
        """Run `pagemill ARGS`. A supervised process that exits by itself is recorded in
        `crashes` and started again, as the deployment's restart policy would (compose:
        `restart: unless-stopped`); tests decide what a crash means."""
        process = devstack.spawn(name, args, {**self.env, **extra_env}, self.log_dir)
        with self._lock:
            self.processes.append(process)
            if supervised:
                self._supervised.append([name, args, extra_env, process, 0])
                if self._supervisor is None:
                    self._supervisor = threading.Thread(
                        target=self._supervise, name="fault-supervisor", daemon=True
                    )
                    self._supervisor.start()
        return process

    def _supervise(self) -> None:
        while not self._stopping.wait(0.5):
            with self._lock:
                entries = list(self._supervised)
            for entry in entries:
                name, args, extra_env, process, restarts = entry
                if process.alive() or self._stopping.is_set():
                    continue
                self.crashes.append((process.name, process.popen.returncode, _last_error(process)))
                replacement = devstack.spawn(
                    f"{name}.restart{restarts + 1}", args, {**self.env, **extra_env}, self.log_dir
                )
                with self._lock:
                    self.processes.append(replacement)
                    entry[3], entry[4] = replacement, restarts + 1

    def spawn_worker(
        self,
        name: str = "worker",
        *,
        beat: bool = True,
        concurrency: int = 2,
        supervised: bool = False,
    ) -> devstack.Process:
        args = ["worker", "--concurrency", str(concurrency)]
        return self.spawn(name, [*args, "--beat"] if beat else args, supervised=supervised)

    def spawn_ingest(self, name: str = "ingest", *, supervised: bool = False) -> devstack.Process:
        return self.spawn(name, ["ingest"], supervised=supervised)

    def wait_ready(self, *processes: devstack.Process, timeout: float = 60.0) -> None:
        """Workers print `ready.` once consuming; intake logs `consuming bucket events`."""
        for process in processes:
            marker = "consuming bucket events" if process.name.startswith("ingest") else "ready."
            ok = wait_for(lambda p=process, m=marker: _log_has(p, m), timeout, 0.1)
            assert ok, f"{process.name} did not start:\n{process.tail(40)}"

    def stop_all(self) -> None:
        self._stopping.set()
        if self._supervisor is not None:
            self._supervisor.join(5)
        # Everything is measured by now: a short warm shutdown, then SIGKILL.
        with self._lock:
            processes = list(self.processes)
        for process in processes:
            process.stop(timeout=3)
            # A process that died by itself (or was killed alone) may leave pool or beat
            # processes behind in its process group (its own session, see devstack.spawn).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(process.popen.pid, signal.SIGKILL)

    def tails(self, lines: int = 40) -> str:
        return "\n".join(f"--- {p.name} ---\n{p.tail(lines)}" for p in self.processes)

    def cli(self, *args: str, timeout: float = 60.0) -> str:
        """Run `pagemill ARGS` once with the stack's settings; its stdout."""
        out = subprocess.run(
            [sys.executable, "-m", "workers", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        assert out.returncode == 0, f"pagemill {' '.join(args)} failed:\n{out.stderr[-2000:]}"
        return out.stdout

    # --- documents ---------------------------------------------------------------------------

    def upload(self, key: str, seed: int) -> str:
        body = self.book.add(key, seed)
        self.bucket.s3.put_object(Bucket=self.bucket.bucket, Key=key, Body=body)
        self.pushed.add(key)
        return key

    def set_latency(self, seconds: float, warm_up_s: float = 0.2) -> None:
        """Model calls take `seconds`, except warm-up documents' (see `warm_up`)."""

        def latency(request: RecordedRequest) -> float:
            key = self.book.key_for(request)
            return warm_up_s if key is not None and key.startswith("warmup/") else seconds

        self.server.latency = latency

    def warm_up(self, count: int = 2, *, wait: bool = True, seed: int = 9000) -> list[str]:
        """Upload `count` documents that warm up the worker's pool processes.

        A prefork child pays for its imports (the provider SDK: 2 s on an idle 2-core machine,
        twice that under load) on its first task, which counts against the short task time
        limit these tests use; faults should hit warm workers, as in production.
        """
        base = len([k for k in self.pushed if k.startswith("warmup/")])
        keys = [self.upload(f"warmup/{base + n}.pdf", seed=seed + base + n) for n in range(count)]
        if wait:
            self.wait_final(keys, timeout=60)
        return keys

    def start_bare_supervised(self, *, extract: int = 6, prepare: int = 2) -> list[str]:
        """The bare `pagemill worker --beat` as deployed (prepare on prefork, extract on
        threads) and an intake, both restarted if they die (recorded in `crashes`), warmed up;
        unhandled bucket events come back after 3 s. Returns the warm-up documents' keys."""
        self.bucket.sqs.set_queue_attributes(
            QueueUrl=self.bucket.queue_url, Attributes={"VisibilityTimeout": "3"}
        )
        worker = self.spawn(
            "worker",
            ["worker", "--beat"],
            supervised=True,
            PAGEMILL_PREPARE_CONCURRENCY=str(prepare),
            PAGEMILL_EXTRACT_CONCURRENCY=str(extract),
        )
        ingest = self.spawn_ingest(supervised=True)
        self.wait_ready(ingest)
        # One "ready." per stage worker.
        ready = wait_for(lambda: _log_has_lines(worker, "ready.", 2), 90, 0.2)
        assert ready, f"the stage workers did not start:\n{worker.tail(40)}"
        return self.warm_up(2)

    def worker_logs(self) -> list[str]:
        logs = []
        for process in self.processes:
            if process.name.startswith("worker"):
                try:
                    logs.append(process.log_path.read_text(errors="replace"))
                except OSError:
                    continue
        return logs

    def sweep_reenqueues(self) -> int:
        """Documents re-enqueued by the sweep, summed over every worker's log."""
        pattern = re.compile(r"sweep re-enqueued (\d+) document")
        return sum(int(n) for log in self.worker_logs() for n in pattern.findall(log))

    def beat_ticks_since(self, since: datetime) -> int:
        """Sweeps the beat (inside a worker) sent after `since` (local wall-clock time)."""
        pattern = re.compile(
            r"^\[(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d),\d+: INFO/Beat\] "
            r"Scheduler: Sending due task sweep",
            re.MULTILINE,
        )
        return sum(
            1
            for log in self.worker_logs()
            for stamp in pattern.findall(log)
            if datetime.strptime(stamp, "%Y-%m-%d %H:%M:%S") > since.replace(microsecond=0)
        )

    def time_limit_hits(self) -> int:
        """Tasks stopped by a time limit (soft: an exception in the task; hard: the pool
        process is killed). The fault stack's limits are short (10 s soft, 15 s hard) and a
        pool process's first task pays for its imports, so on a loaded machine a task can be
        stopped mid-call: one extra provider request, its row left `started`, and a wait for the
        lease.
        Assertions allow for these; they are reported."""
        pattern = re.compile(r"(?:Soft|Hard) time limit \(\S+\) exceeded for \S+\[([0-9a-f-]+)\]")
        return len({task for log in self.worker_logs() for task in pattern.findall(log)})

    def model_requests(self) -> list[RecordedRequest]:
        return [r for r in self.server.requests if r.api == "anthropic"]

    def in_flight(self, latency: float, keys: Iterable[str] | None = None) -> list[RecordedRequest]:
        """Model requests (for `keys`, when given) received less than `latency` seconds ago:
        sent, and not answered yet."""
        wanted = set(keys) if keys is not None else None
        now = time.monotonic()
        return [
            r
            for r in self.model_requests()
            if now - r.received_at < latency - 0.3
            and (wanted is None or self.book.key_for(r) in wanted)
        ]

    def documents(self) -> dict[str, dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, key, status, error_category, finished_at FROM documents"
                    " WHERE bucket = :b ORDER BY id"
                ),
                {"b": self.bucket.bucket},
            ).mappings()
            return {r["key"]: dict(r) for r in rows}

    def all_final(self, keys: Iterable[str]) -> bool:
        docs = self.documents()
        return all(k in docs and docs[k]["status"] in FINAL for k in keys)

    def wait_final(self, keys: Iterable[str], timeout: float) -> float:
        """Wait until every key has a document in a final state; seconds since the stack began."""
        wanted = list(keys)
        ok = wait_for(lambda: self.all_final(wanted), timeout, 0.5)
        if not ok:
            try:
                states = {k: v["status"] for k, v in self.documents().items()}
            except SQLAlchemyError as exc:
                states = {"error": str(exc)}
            raise AssertionError(
                f"not every document reached a final state within {timeout:g} s: {states}\n"
                + self.tails()
            )
        return round(time.monotonic() - self.started, 1)

    # --- broker ------------------------------------------------------------------------------

    def _broker(self) -> redis.Redis:
        return redis.Redis.from_url(self.redis.url(), socket_timeout=2)

    def broker_depth(self) -> dict[str, int]:
        """Messages waiting in the documents queue, and messages delivered but not acked."""
        client = self._broker()
        try:
            return {
                "queued": sum(int(client.llen(queue)) for _, queue in document_tasks()),
                "unacked": int(client.hlen("unacked")),
            }
        finally:
            client.close()

    def queued_task_ids(self) -> set[str]:
        """The Celery task ids of the messages waiting in the documents queues."""
        client = self._broker()
        try:
            return {
                json.loads(raw)["headers"]["id"]
                for _, queue in document_tasks()
                for raw in client.lrange(queue, 0, -1)
            }
        finally:
            client.close()

    def _unacked_tags(self) -> set[bytes]:
        client = self._broker()
        try:
            return set(client.hkeys("unacked"))
        finally:
            client.close()

    def redeliver(self, document_ids: Iterable[int], settle_s: float = 1.5) -> int:
        """Publish another message of every document task for each id (a late broker
        redelivery, as after a visibility timeout) and wait until the worker consumed them all;
        the number of model requests they caused (0 is the only right answer for finished
        documents)."""
        from pipeline.settings import load_settings
        from workers.app import make_app

        ids = list(document_ids)
        before = len(self.model_requests())
        # Messages a killed worker left unacked stay there until their visibility timeout.
        left_over = self._unacked_tags()
        app = make_app(load_settings(broker_url=self.redis.url(), database_url=self.database_url))
        try:
            for document_id in ids:
                for name, queue in document_tasks():
                    app.send_task(name, args=[document_id], queue=queue)
        finally:
            app.close()
        drained = wait_for(
            lambda: self.broker_depth()["queued"] == 0 and self._unacked_tags() <= left_over,
            30.0,
            0.2,
        )
        assert drained, f"redelivered messages were not consumed: {self.broker_depth()}"
        time.sleep(settle_s)
        return len(self.model_requests()) - before

    # --- figures -----------------------------------------------------------------------------

    def figures(self, test: str, *, prefix: str = "", **extra: Any) -> Figures:
        """The figures (see the module docstring) for the keys starting with `prefix`."""
        with self.engine.connect() as conn:
            docs = list(
                conn.execute(
                    text(
                        """
                        SELECT d.id, d.key, d.status, d.error_category, d.finished_at,
                               (SELECT count(*) FROM extractions e
                                 WHERE e.document_id = d.id) AS results,
                               (SELECT count(*) FROM extractions e
                                 WHERE e.document_id = d.id AND e.valid) AS valid_results,
                               (SELECT count(*) FROM vlm_calls c
                                 WHERE c.document_id = d.id AND c.outcome = 'ok') AS ok_calls
                          FROM documents d
                         WHERE d.bucket = :b AND starts_with(d.key, :p) ORDER BY d.id
                        """
                    ),
                    {"b": self.bucket.bucket, "p": prefix},
                ).mappings()
            )
            calls = list(
                conn.execute(
                    text(
                        """
                        SELECT c.outcome, c.error_category, c.cost_usd, c.input_tokens,
                               c.output_tokens, c.request_id, d.key
                          FROM vlm_calls c JOIN documents d ON d.id = c.document_id
                         WHERE d.bucket = :b AND starts_with(d.key, :p)
                        """
                    ),
                    {"b": self.bucket.bucket, "p": prefix},
                ).mappings()
            )
            dead_letters = conn.execute(
                text(
                    """
                    SELECT count(*) FROM dead_letters l JOIN documents d ON d.id = l.document_id
                     WHERE d.bucket = :b AND starts_with(d.key, :p) AND l.replayed_at IS NULL
                    """
                ),
                {"b": self.bucket.bucket, "p": prefix},
            ).scalar_one()
            paid_twice = conn.execute(
                text(
                    """
                    SELECT count(*) FROM (
                        SELECT c.document_id, page
                          FROM vlm_calls c JOIN documents d ON d.id = c.document_id,
                               unnest(c.page_indexes) AS page
                         WHERE d.bucket = :b AND starts_with(d.key, :p) AND c.outcome = 'ok'
                         GROUP BY c.document_id, page HAVING count(*) > 1
                    ) AS pages
                    """
                ),
                {"b": self.bucket.bucket, "p": prefix},
            ).scalar_one()
        by_key: dict[str, list[Any]] = {}
        for doc in docs:
            by_key.setdefault(doc["key"], []).append(doc)
        final_keys = {
            key for key, rows in by_key.items() if any(r["status"] in FINAL for r in rows)
        }
        requests = [
            r for r in self.model_requests() if (self.book.key_for(r) or "").startswith(prefix)
        ]
        pushed = {key for key in self.pushed if key.startswith(prefix)}
        wall_offset = time.time() - time.monotonic()
        finished = {
            d["key"]: d["finished_at"].timestamp() for d in docs if d["finished_at"] is not None
        }
        after_finish = 0
        per_key_requests: Counter[str] = Counter()
        for request in requests:
            key = self.book.key_for(request)
            if key is None:
                continue
            per_key_requests[key] += 1
            if key in finished and request.received_at + wall_offset > finished[key] + 0.05:
                after_finish += 1
        errors = [c for c in calls if c["outcome"] == "error"]
        figures = Figures(
            {
                "test": test,
                "pushed": len(pushed),
                "documents": len(docs),
                "done": sum(1 for d in docs if d["status"] == "done"),
                "failed": sum(1 for d in docs if d["status"] == "failed"),
                "lost": len(pushed - final_keys),
                "duplicate_documents": sum(len(rows) - 1 for rows in by_key.values()),
                "duplicate_results": sum(max(0, d["results"] - 1) for d in docs),
                "missing_results": sum(
                    1 for d in docs if d["status"] == "done" and d["valid_results"] != 1
                ),
                "failed_without_category": sum(
                    1 for d in docs if d["status"] == "failed" and not d["error_category"]
                ),
                "ok_calls": sum(d["ok_calls"] for d in docs),
                "duplicate_paid_calls": sum(max(0, d["ok_calls"] - 1) for d in docs),
                "model_requests": len(requests),
                "max_requests_per_document": max(per_key_requests.values(), default=0),
                "requests_after_finish": after_finish,
                "unrecorded_requests": max(0, len(requests) - len(calls)),
                # Rows left `started`: calls whose worker died before the answer was stored.
                "cut_off_calls": sum(1 for c in calls if c["outcome"] == "started"),
                "error_calls": len(errors),
                "error_categories": dict(Counter(str(c["error_category"]) for c in errors)),
                "priced_error_calls": sum(
                    1
                    for c in calls
                    if c["outcome"] != "ok"
                    and ((c["cost_usd"] or 0) > 0 or c["input_tokens"] or c["output_tokens"])
                ),
                "unpriced_ok_calls": sum(
                    1 for c in calls if c["outcome"] == "ok" and not (c["cost_usd"] or 0) > 0
                ),
                "dead_letters": int(dead_letters),
                "paid_twice": int(paid_twice),
                "process_crashes": len(self.crashes),
                "exits_0": sum(1 for _, code, _ in self.crashes if code == 0),
                "sweep_reenqueues": self.sweep_reenqueues(),
                "time_limit_hits": self.time_limit_hits(),
                "seconds": round(time.monotonic() - self.started, 1),
            }
        )
        figures["_calls"] = calls  # for test-specific assertions; not reported
        figures["_requests"] = requests
        figures.update(extra)
        return figures


def document_tasks() -> list[tuple[str, str]]:
    """(task name, queue) of every task that works on one document: not the maintenance ones.
    Read from the app's routes, so that it follows the pipeline's stages."""
    found = sorted(
        (name, route["queue"])
        for name, route in queues.ROUTES.items()
        if route["queue"] != queues.MAINTENANCE
    )
    assert found, "no document task routed"
    return found


def _last_error(process: devstack.Process) -> str:
    """The last CRITICAL/ERROR line of a process's log, for the crash record."""
    lines = [
        line
        for line in process.tail(400).splitlines()
        if "CRITICAL" in line or "Unrecoverable" in line or "ERROR" in line
    ]
    return " ".join(lines[-1].split())[:300] if lines else ""


def _log_has_lines(process: devstack.Process, marker: str, count: int) -> bool:
    try:
        return process.log_path.read_text(errors="replace").count(marker) >= count
    except OSError:
        return False


def _log_has(process: devstack.Process, marker: str) -> bool:
    try:
        return marker in process.log_path.read_text(errors="replace")
    except OSError:
        return False


def check_invariants(figures: Figures) -> None:
    """What every fault test promises, whatever the fault."""
    assert figures["lost"] == 0, f"documents without a final state: {figures}"
    assert figures["duplicate_documents"] == 0, f"an object became two documents: {figures}"
    assert figures["duplicate_results"] == 0, f"more than one result row: {figures}"
    assert figures["missing_results"] == 0, f"a done document without its result: {figures}"
    assert figures["failed_without_category"] == 0, f"failed without a category: {figures}"
    assert figures["duplicate_paid_calls"] == 0, f"a second successful model call: {figures}"
    assert figures["requests_after_finish"] == 0, f"a model call for finished work: {figures}"


def no_crashes(stack: FaultStack) -> None:
    """Every process reconnected by itself: none died (the harness would have restarted it, as
    compose's restart policy does, and recorded it here), and certainly none ended with 0."""
    assert not stack.crashes, f"a process died instead of reconnecting: {stack.crashes}"


def no_waiting_failures(figures: Figures) -> None:
    """What an outage must never do: fail a document or dead-letter it."""
    assert figures["failed"] == 0, f"a document failed during an outage: {figures}"
    assert figures["dead_letters"] == 0, f"an outage made a dead letter: {figures}"
    assert figures["done"] == figures["pushed"], figures
    assert figures["paid_twice"] == 0, f"a page paid for twice: {figures}"


def no_leftover_files(stack: FaultStack) -> None:
    """The processes' temporary directory holds nothing they left behind (such as the beat's
    schedule files, `pagemill-beat-<pid>.*`, that every start used to leave in /tmp)."""
    left = sorted(p.name for p in stack.tmp_dir.iterdir()) if stack.tmp_dir.exists() else []
    assert not [name for name in left if name.startswith("pagemill")], left


def log_lines(stack: FaultStack, marker: str) -> int:
    """Lines containing `marker` over every process's log."""
    total = 0
    for process in stack.processes:
        try:
            text_ = process.log_path.read_text(errors="replace")
        except OSError:
            continue
        total += sum(1 for line in text_.splitlines() if marker in line)
    return total


def report(figures: Figures) -> None:
    public = figures.public()
    print(
        f"\n[faults] {public['test']}: pushed={public['pushed']} lost={public['lost']} "
        f"duplicate_results={public['duplicate_results']} "
        f"dead_letters={public['dead_letters']} paid_twice={public['paid_twice']} "
        f"duplicate_paid_calls={public['duplicate_paid_calls']} "
        f"model_requests={public['model_requests']} "
        f"unrecorded_requests={public['unrecorded_requests']} "
        f"cut_off_calls={public['cut_off_calls']} "
        f"errors={public['error_categories']} seconds={public['seconds']}"
    )
    print(f"[faults] {json.dumps(public, default=str, sort_keys=True)}")
    path = os.environ.get(REPORT_ENV)
    if path:
        public["recorded_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(public, default=str, sort_keys=True) + "\n")


def take_event(bucket: BucketWithQueue, key: str, timeout: float = 15.0) -> dict[str, Any]:
    """Receive the queue's event for `key` (deleting the s3:TestEvent on the way); the message
    stays in the queue, invisible until its visibility timeout or `release_event`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = bucket.sqs.receive_message(
            QueueUrl=bucket.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=1
        )
        found: dict[str, Any] | None = None
        for message in response.get("Messages", []):
            refs = parse_bucket_event(message["Body"])
            if not refs:  # the s3:TestEvent: intake would delete it too
                bucket.sqs.delete_message(
                    QueueUrl=bucket.queue_url, ReceiptHandle=message["ReceiptHandle"]
                )
            elif found is None and any(ref.key == key for ref in refs):
                found = message
            else:
                release_event(bucket, message)
        if found is not None:
            return found
    raise AssertionError(f"no bucket event for {key} within {timeout:g} s")


def release_event(bucket: BucketWithQueue, message: dict[str, Any]) -> None:
    bucket.sqs.change_message_visibility(
        QueueUrl=bucket.queue_url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=0
    )


def queue_counts(bucket: BucketWithQueue) -> tuple[int, int]:
    attrs = bucket.sqs.get_queue_attributes(
        QueueUrl=bucket.queue_url,
        AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
    )["Attributes"]
    return (
        int(attrs["ApproximateNumberOfMessages"]),
        int(attrs["ApproximateNumberOfMessagesNotVisible"]),
    )
