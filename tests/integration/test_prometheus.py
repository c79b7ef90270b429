"""A real Prometheus scrapes a real worker (and the web server) while documents go through the
pipeline; PromQL then gives exactly what Postgres holds. The Grafana dashboards' every metric
exists in that scrape and every PromQL expression of theirs runs.

The worker is one Celery worker on the prefork pool, 2 processes, each replaced after two
tasks: some samples come from processes that have exited by the time Prometheus asks.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef
from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf, scanned_pdf
from pipeline.usecases.recovery import sweep
from tests.conftest import REPO
from tests.support import fake_model_server as fake
from tests.support.prometheus import Prometheus, prometheus_path
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.services import free_port
from workers import devstack

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(prometheus_path() is None, reason="needs Debian's prometheus package"),
]

DASHBOARDS = REPO / "infra" / "grafana" / "dashboards"
# What Grafana substitutes in a query before sending it.
GRAFANA_VARIABLES = {"$__rate_interval": "5s", "$__range": "5m", "$__interval": "1s"}


def wait_for(check: Callable[[], Any], timeout: float, what: str) -> Any:
    """Poll until `check()` returns a truthy value; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(0.25)
    raise AssertionError(f"timed out waiting for {what}; last: {last!r}")


def wait_while_finishing(
    finished: Callable[[], int], total: int, worker: devstack.Process, idle_s: float
) -> bool:
    """Wait while documents keep finishing: True when all `total` have, False once none has
    for `idle_s` seconds."""
    last, since = -1, time.monotonic()
    while (done := finished()) < total:
        assert worker.alive(), worker.tail(40)
        if done != last:
            last, since = done, time.monotonic()
        elif time.monotonic() - since > idle_s:
            return False
        time.sleep(0.25)
    return True


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as reply:
        return str(reply.read().decode())


def dashboard_queries() -> list[str]:
    found = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        for panel in json.loads(path.read_text())["panels"]:
            for target in panel.get("targets", []):
                if "expr" in target:
                    found.append(target["expr"])
    return found


@pytest.fixture
def worker_metrics(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    yield free_port(), tmp_path / "metrics"


def test_promql_counts_what_the_pipeline_did(
    sessions: sessionmaker[Session],
    redis_broker: str,
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: fake.FakeModelServer,
    worker_metrics: tuple[int, Path],
    tmp_path: Path,
) -> None:
    from workers.tasks.documents import enqueue_document

    port, directory = worker_metrics
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    # The first model call is overloaded (529): one retry, then every call answers.
    fake_model_server.script(fake.error(529))
    env = {
        "PAGEMILL_S3_ENDPOINT_URL": s3_server,
        "PAGEMILL_BROKER_URL": redis_broker,
        **devstack.DUMMY_CREDENTIALS,
        "PAGEMILL_PROVIDER": "anthropic",
        "PAGEMILL_ANTHROPIC_API_KEY": "sk-test-metrics",
        "PAGEMILL_ANTHROPIC_BASE_URL": fake_model_server.anthropic_base_url,
        "PAGEMILL_WORKER_MAX_TASKS_PER_CHILD": "2",
        "PAGEMILL_RETRY_BASE_S": "0.2",
        "PAGEMILL_RETRY_CAP_S": "0.5",
        "PAGEMILL_METRICS_PORT": str(port),
        "PAGEMILL_METRICS_DIR": str(directory),
        "PAGEMILL_METRICS_CACHE_S": "0.5",
    }
    web_port = free_port()
    prometheus = Prometheus(
        tmp_path / "prometheus",
        {
            "pagemill-worker": [f"127.0.0.1:{port}"],
            "pagemill-web": [f"127.0.0.1:{web_port}"],
        },
    )
    worker = devstack.spawn(
        "worker",
        ["worker", "--queues", "prepare,extract", "--pool", "prefork", "--concurrency", "2"],
        env,
        tmp_path,
    )
    web = devstack.spawn("web", ["web", "--port", str(web_port)], env, tmp_path)
    try:
        prometheus.start()

        def target_up() -> bool:
            assert worker.alive(), worker.tail(40)
            assert web.alive(), web.tail(40)
            up = prometheus.targets_up()
            return len(up) == 2 and all(up.values())

        started = time.monotonic()
        wait_for(target_up, 60, "the worker's metrics port and the web server's /metrics")
        print(f"metrics port up after {time.monotonic() - started:.1f} s")

        uploads: list[tuple[str, bytes, str]] = [
            *((f"local-{n}.pdf", render_pdf(make_invoice(40 + n)), "local") for n in range(2)),
            ("multi-page.pdf", render_pdf(make_invoice(45, items=40), rows_per_page=15), "local"),
            ("broken.pdf", corrupt_pdf(b"x"), "local"),
            ("scanned.pdf", scanned_pdf(render_pdf(make_invoice(47))), "local"),
            *((f"model-{n}.pdf", render_pdf(make_invoice(50 + n)), "anthropic") for n in range(2)),
        ]
        ids = []
        for key, body, provider in uploads:
            put = s3.put_object(Bucket=bucket, Key=key, Body=body)
            with transaction(sessions) as session:
                document_id, _ = repo.register_document(
                    session,
                    ObjectRef(bucket=bucket, key=key, version=put["ETag"].strip('"')),
                    "invoice",
                    provider,
                )
            ids.append(document_id)
        for document_id in ids:
            enqueue_document(document_id)

        def finished() -> int:
            with sessions() as session:
                n = session.execute(
                    text("SELECT count(*) FROM documents WHERE finished_at IS NOT NULL")
                ).scalar_one()
            return int(n)

        # Celery's prefork pool, replacing processes, can strand a message it has taken (it
        # stays unacknowledged in that worker and never runs; seen once in CI). The pipeline's
        # answer is its sweep, which beat runs as deployed: a document left pending is sent
        # again. This worker runs without beat, so the test sweeps, once, if progress stops.
        if not wait_while_finishing(finished, len(uploads), worker, 30):
            rescued = sweep(sessions, stuck_after=timedelta(seconds=10), enqueue=enqueue_document)
            print(f"the sweep re-enqueued {rescued}: the pool had stranded their messages")
            assert rescued, "documents stopped finishing, and none was left pending\n" + (
                worker.tail(60)
            )
            assert wait_while_finishing(finished, len(uploads), worker, 30), worker.tail(60)
        assert worker.alive(), worker.tail(40)
        print(f"documents final after {time.monotonic() - started:.1f} s")
        with sessions() as session:
            by_status = dict(
                session.execute(text("SELECT status, count(*) FROM documents GROUP BY 1")).all()
            )
            pages = session.execute(text("SELECT sum(page_count) FROM documents")).scalar_one()
            calls = session.execute(
                text(
                    "SELECT count(*), sum(input_tokens), sum(output_tokens), sum(cost_usd)"
                    " FROM vlm_calls WHERE outcome <> 'started'"
                )
            ).one()
        assert sum(by_status.values()) == len(uploads) and by_status.get("failed") == 1
        # One page each, three for the long one; the broken one none.
        assert pages == 2 + 3 + 1 + 2

        # Prometheus, not the endpoint, answers: the same numbers as Postgres, exactly.
        def finished_by_status() -> dict[str, float] | None:
            got = {
                dict(labels)["status"]: value
                for labels, value in prometheus.values(
                    "sum by (status) (pagemill_documents_finished_total)"
                ).items()
            }
            want = {status: float(n) for status, n in by_status.items()}
            return got if {k: v for k, v in got.items() if v} == want else None

        wait_for(finished_by_status, 20, f"documents finished by status == {by_status}")
        assert prometheus.values("sum(pagemill_pages_total)") == {(): float(pages)}
        assert prometheus.values("sum(pagemill_model_call_seconds_count)") == {(): calls[0]}
        tokens = prometheus.values("sum by (kind) (pagemill_tokens_total)")
        assert tokens[(("kind", "input"),)] == calls[1]
        assert tokens[(("kind", "output"),)] == calls[2]
        (cost,) = prometheus.values("sum(pagemill_cost_usd_total)").values()
        assert cost == pytest.approx(float(calls[3]), rel=1e-9) and cost > 0
        assert prometheus.values("sum(pagemill_dead_letters_total)") == {(): 1.0}
        # The scan is the one page OCR read: the offline extractor's thorough setting.
        ocr_pages = prometheus.values("sum by (setting) (pagemill_ocr_pages_total)")
        assert ocr_pages == {(("setting", "thorough"),): 1.0, (("setting", "fast"),): 0.0}
        ocr_cpu = prometheus.values("sum by (step) (pagemill_ocr_cpu_seconds_total)")
        assert {dict(labels)["step"] for labels in ocr_cpu} == {
            "decode", "preprocess", "detect", "recognise"
        }  # fmt: skip
        assert ocr_cpu[(("step", "recognise"),)] > ocr_cpu[(("step", "decode"),)] > 0
        retries = prometheus.values("sum by (category) (pagemill_retries_total) > 0")
        assert retries == {(("category", "provider_unavailable"),): 1.0}
        assert prometheus.values('sum(pagemill_model_call_seconds_count{outcome="error"})') == {
            (): 1.0
        }
        # Both targets report the shared gauges (dashboards take the max).
        jobs = prometheus.values("count by (job) (pagemill_queue_depth)")
        assert set(jobs) == {(("job", "pagemill-web"),), (("job", "pagemill-worker"),)}
        queues = prometheus.values("max by (queue) (pagemill_queue_depth)")
        assert {dict(labels)["queue"] for labels in queues} >= {"prepare", "extract"}
        work = 'sum(pagemill_queue_depth{queue=~"prepare|extract"})'
        wait_for(lambda: prometheus.values(work) == {(): 0.0}, 10, "empty work queues")
        # Dead letters are rows in Postgres, not messages in a queue of their own.
        assert {dict(labels)["queue"] for labels in queues} == {"prepare", "extract", "maintenance"}
        wait_for(
            lambda: prometheus.values("max(pagemill_oldest_pending_age_seconds)") == {(): 0.0},
            10,
            "no pending document",
        )
        assert prometheus.values("sum(pagemill_calls_in_flight)") == {(): 0.0}

        # The samples came from several pool processes, some of them gone by now (each ran at
        # most two tasks), all recording into the directory the main process serves.
        pids = {
            int(m.group(1))
            for p in (directory / "worker").glob("counter_*.db")
            if (m := re.match(r"counter_(\d+)\.db", p.name))
        }
        assert len(pids) >= 3, pids
        assert any(not (Path("/proc") / str(pid)).exists() for pid in pids), pids

        # Every metric the dashboards name is in a real scrape, and every query runs.
        exposition = scrape(f"http://127.0.0.1:{port}/metrics")
        exposition += scrape(f"http://127.0.0.1:{web_port}/metrics")
        exposed = set(re.findall(r"^(pagemill_\w+?)(?:\{| )", exposition, re.M))
        queries = dashboard_queries()
        named = {name for q in queries for name in re.findall(r"\bpagemill_\w+", q)}
        assert named and not named - exposed, sorted(named - exposed)
        for query in queries:
            runnable = query
            for variable, value in GRAFANA_VARIABLES.items():
                runnable = runnable.replace(variable, value)
            prometheus.query(runnable)  # raises with Prometheus's parse error
    finally:
        prometheus.stop()
        web.stop()
        worker.stop()
        print(f"--- worker ---\n{worker.tail(60)}")
