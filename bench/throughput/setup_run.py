"""One set-up from start to stop: its processes, the warm-up, unsaturated and load phases."""

from __future__ import annotations

import os
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import common
from bench.common import Group, log
from bench.throughput.figures import latency_figures, throughput_figures
from bench.throughput.options import Options
from bench.throughput.services import Helper, start_helper
from bench.throughput.setups import Setup
from bench.throughput.uploads import SCANNED_ROUTES, PoolItem, Uploader, pool_keys

FINAL = ("done", "failed", "needs_review")

_WORKER_READY = re.compile(r"celery@\S+ ready")
_INGEST_READY = "consuming bucket events"


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
            # Every page goes to the provider: the uploads repeat a pool of documents, which the
            # page cache would answer for free (its savings are bench.cost's to measure).
            "PAGEMILL_PAGE_CACHE": "false",
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
            fig["unsaturated"] = latency_figures(self._rows(self.bucket, "latency/"), uploaded)
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
        fig.update(throughput_figures(rows, effective, samples, ideal_per_min))
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


def _redis_port(url: str) -> int:
    match = re.search(r":(\d+)(/|$)", url.rsplit("@", maxsplit=1)[-1])
    return int(match.group(1)) if match else 6379
