"""End to end on real services: upload → bucket notification → SQS → intake → Celery → Postgres."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf, scanned_pdf
from tests.support.fake_model_server import FakeModelServer
from tests.support.s3_fixtures import BucketWithQueue
from workers import devstack

pytestmark = pytest.mark.integration

FINAL = ("done", "failed", "needs_review")


@pytest.fixture
def stack_env(
    s3_server: str, bucket_with_queue: BucketWithQueue, redis_broker: str
) -> dict[str, str]:
    return {
        "PAGEMILL_S3_ENDPOINT_URL": s3_server,
        "PAGEMILL_SQS_QUEUE_URL": bucket_with_queue.queue_url,
        "PAGEMILL_SQS_WAIT_SECONDS": "1",
        "PAGEMILL_BROKER_URL": redis_broker,
        **devstack.DUMMY_CREDENTIALS,
    }


@pytest.fixture
def stack(stack_env: dict[str, str], tmp_path: Path) -> Iterator[dict[str, str]]:
    env = stack_env
    processes = [
        devstack.spawn("ingest", ["ingest"], env, tmp_path),
        devstack.spawn("worker", ["worker", "--concurrency", "2"], env, tmp_path),
    ]
    try:
        yield env
    finally:
        for process in processes:
            process.stop()
        for process in processes:
            print(f"--- {process.name} ---\n{process.tail(40)}")


def _wait_final(sessions: sessionmaker[Session], bucket: str, count: int, timeout: float) -> None:
    def final() -> bool:
        with sessions() as session:
            n = session.execute(
                text("SELECT count(*) FROM documents WHERE bucket = :b AND status = ANY(:f)"),
                {"b": bucket, "f": list(FINAL)},
            ).scalar_one()
        return int(n) >= count

    assert devstack.wait_for(final, timeout, interval=0.5), "documents did not reach a final state"


def test_upload_to_result_rows_with_the_local_extractor(
    stack: dict[str, str], sessions: sessionmaker[Session], bucket_with_queue: BucketWithQueue
) -> None:
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    clean, scanned, multi = make_invoice(21), make_invoice(22, items=3), make_invoice(23, items=40)
    uploads = {
        "in/clean invoice+1.pdf": render_pdf(clean),
        "in/scan é.pdf": scanned_pdf(render_pdf(scanned), seed=4),
        "in/multi.pdf": render_pdf(multi, rows_per_page=15),
        "in/broken.pdf": corrupt_pdf(b"x"),
    }
    for key, body in uploads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body)
    # The same object announced twice is still one document.
    s3.put_object(Bucket=bucket, Key="in/multi.pdf", Body=uploads["in/multi.pdf"])

    _wait_final(sessions, bucket, len(uploads), timeout=180)

    with sessions() as session:
        rows = {
            r.key: r
            for r in session.execute(
                text(
                    "SELECT key, status, error_category, invoice_number, total, line_item_count,"
                    " calls, cost_usd FROM invoice_results WHERE bucket = :b"
                ),
                {"b": bucket},
            )
        }
        items = session.execute(
            text("SELECT count(*) FROM invoice_line_items WHERE bucket = :b AND key = :k"),
            {"b": bucket, "k": "in/multi.pdf"},
        ).scalar_one()
    assert set(rows) == set(uploads)
    assert rows["in/clean invoice+1.pdf"].status == "done"
    assert rows["in/clean invoice+1.pdf"].invoice_number == clean.invoice_number
    assert rows["in/clean invoice+1.pdf"].total == clean.total
    assert rows["in/multi.pdf"].status == "done"
    assert rows["in/multi.pdf"].total == multi.total
    assert items == len(multi.line_items)  # one result whose line items span all three pages
    assert rows["in/scan é.pdf"].status == "done"
    assert rows["in/scan é.pdf"].total == scanned.total
    assert rows["in/broken.pdf"].status == "failed"
    assert rows["in/broken.pdf"].error_category == "bad_input"
    # Its dead letter is a row in Postgres, and nowhere else: no broker list that nobody reads
    # grows with every failure.
    broker = redis.Redis.from_url(stack["PAGEMILL_BROKER_URL"])
    try:
        assert not [k for k in broker.keys("*dead*letter*")], broker.keys("*")
    finally:
        broker.close()
    with sessions() as session:
        letters = session.execute(
            text(
                "SELECT count(*) FROM dead_letters l JOIN documents d ON d.id = l.document_id"
                " WHERE d.bucket = :b AND d.key = 'in/broken.pdf'"
            ),
            {"b": bucket},
        ).scalar_one()
    assert letters == 1
    for key in uploads:
        if key != "in/broken.pdf":
            assert rows[key].calls == 1 and rows[key].cost_usd == 0  # local: a row, no cost

    # The CLI shows the same, as JSON for scripts.
    out = subprocess.run(
        [sys.executable, "-m", "workers", "results", "--format", "json", "--bucket", bucket],
        env={**os.environ, **stack},
        capture_output=True,
        text=True,
        check=True,
    )
    listed = {r["key"]: r for r in json.loads(out.stdout)}
    assert listed["in/clean invoice+1.pdf"]["data"]["invoice_number"] == clean.invoice_number
    assert listed["in/broken.pdf"]["error"]["category"] == "bad_input"
    assert all({"key", "status", "data", "error", "cost_usd"} <= set(r) for r in listed.values())


@pytest.fixture
def anthropic_env(fake_model_server: FakeModelServer) -> dict[str, str]:
    return {
        "PAGEMILL_PROVIDER": "anthropic",
        "PAGEMILL_ANTHROPIC_API_KEY": "sk-test-not-a-real-key",
        "PAGEMILL_ANTHROPIC_BASE_URL": fake_model_server.anthropic_base_url,
    }


def test_upload_to_result_and_cost_rows_with_the_anthropic_sdk(
    stack_env: dict[str, str],
    anthropic_env: dict[str, str],
    fake_model_server: FakeModelServer,
    sessions: sessionmaker[Session],
    bucket_with_queue: BucketWithQueue,
    tmp_path: Path,
) -> None:
    invoice = make_invoice(31)
    fake_model_server.fields = invoice.expected()
    fake_model_server.latency = 0.3
    env = {**stack_env, **anthropic_env}
    processes = [
        devstack.spawn("ingest", ["ingest"], env, tmp_path),
        devstack.spawn("worker", ["worker", "--concurrency", "2"], env, tmp_path),
    ]
    try:
        bucket_with_queue.s3.put_object(
            Bucket=bucket_with_queue.bucket, Key="claude.pdf", Body=render_pdf(invoice)
        )
        _wait_final(sessions, bucket_with_queue.bucket, 1, timeout=90)
    finally:
        for process in processes:
            process.stop()
    with sessions() as session:
        row = session.execute(
            text(
                "SELECT r.status, r.invoice_number, r.cost_usd, c.input_tokens, c.output_tokens,"
                " c.cache_creation_input_tokens AS cache_write, c.cache_read_input_tokens"
                " AS cache_read,"
                " c.model, c.request_id FROM invoice_results r"
                " JOIN vlm_calls c ON c.document_id = r.document_id WHERE r.bucket = :b"
            ),
            {"b": bucket_with_queue.bucket},
        ).one()
    assert row.status == "done" and row.invoice_number == invoice.invoice_number
    assert row.model == "claude-sonnet-4-6" and row.request_id
    # Sonnet list price per million tokens: $3 input, $15 output, $3.75 cache write, $0.30 read.
    expected = (
        row.input_tokens * 3
        + row.output_tokens * 15
        + row.cache_write * 3.75
        + row.cache_read * 0.3
    ) / 1_000_000
    assert float(row.cost_usd) == pytest.approx(expected, rel=1e-6) and row.cost_usd > 0
    # The API key never reaches a log.
    for process in processes:
        assert "sk-test-not-a-real-key" not in process.log_path.read_text(errors="replace")


def _children(pid: int) -> dict[int, str]:
    """Command lines of the direct children of `pid`, by pid."""
    found = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found[int(entry.name)] = cmdline
    return found


def test_the_bare_worker_command_runs_each_stage_on_the_pool_that_fits_it(
    stack_env: dict[str, str],
    anthropic_env: dict[str, str],
    fake_model_server: FakeModelServer,
    sessions: sessionmaker[Session],
    bucket_with_queue: BucketWithQueue,
    tmp_path: Path,
) -> None:
    invoice = make_invoice(32)
    fake_model_server.fields = invoice.expected()
    fake_model_server.latency = 0.5
    env = {
        **stack_env,
        **anthropic_env,
        "PAGEMILL_PREPARE_CONCURRENCY": "1",
        "PAGEMILL_EXTRACT_CONCURRENCY": "8",
    }
    ingest = devstack.spawn("ingest", ["ingest"], env, tmp_path)
    worker = devstack.spawn("worker", ["worker"], env, tmp_path)
    try:
        for n in range(6):
            bucket_with_queue.s3.put_object(
                Bucket=bucket_with_queue.bucket, Key=f"both/{n}.pdf", Body=render_pdf(invoice)
            )
        _wait_final(sessions, bucket_with_queue.bucket, 6, timeout=120)
        children = _children(worker.popen.pid)
        assert worker.alive()
    finally:
        ingest.stop()
        worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert "prepare stage on prefork x1" in log and "extract stage on threads x8" in log
    pools = sorted(c.split("--pool=")[1].split()[0] for c in children.values())
    assert pools == ["prefork", "threads"]
    assert any("--queues=prepare,maintenance " in c for c in children.values())
    assert any("--queues=extract " in c for c in children.values())
    with sessions() as session:
        statuses = session.execute(
            text("SELECT status, count(*) FROM documents WHERE bucket = :b GROUP BY status"),
            {"b": bucket_with_queue.bucket},
        ).all()
        calls = session.execute(
            text(
                "SELECT count(*) FROM vlm_calls c JOIN documents d ON d.id = c.document_id"
                " WHERE d.bucket = :b"
            ),
            {"b": bucket_with_queue.bucket},
        ).scalar_one()
    assert dict(statuses) == {"done": 6} and calls == 6
    # Stopping the launcher stops both stage workers.
    assert children and all(not Path(f"/proc/{pid}").exists() for pid in children)
