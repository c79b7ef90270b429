"""`FaultStack`: one test's services, its pipeline processes, uploads, waits and broker."""

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
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from tests.faults.harness.figures import FINAL, Figures, measure
from tests.faults.harness.invoices import InvoiceBook
from tests.faults.harness.settings import RECOVERY_SETTINGS
from tests.support.fake_model_server import FakeModelServer, RecordedRequest
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.services import PrivatePostgres, PrivateRedis
from workers import devstack, queues


def wait_for(predicate: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    """`devstack.wait_for`, but a predicate that raises (a service is down) counts as False."""

    def safe() -> bool:
        try:
            return bool(predicate())
        except (SQLAlchemyError, OSError, redis.RedisError):
            return False

    return devstack.wait_for(safe, timeout, interval)


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
        """The figures (see the package docstring) for the keys starting with `prefix`."""
        return measure(self, test, prefix=prefix, **extra)


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
