"""PAGEMILL_LOG_FORMAT=json on real processes (intake, the default two-stage worker with its
beat, the web server): every line is one JSON object, Celery's own included; lines carry the
document id, task id, stage and provider request id of the work; no document content, prompt
or secret is logged at INFO. The worker's one metrics port counts both stage workers."""

from __future__ import annotations

import contextlib
import json
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef
from pipeline.extractors.anthropic import SYSTEM_PREAMBLE
from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf
from tests.support import fake_model_server as fake
from tests.support.s3_fixtures import BucketWithQueue
from tests.support.services import free_port
from workers import devstack

pytestmark = pytest.mark.integration

API_KEY = "sk-test-json-logs-9f8e7d6c"


def finished_total(url: str) -> float:
    with urllib.request.urlopen(url, timeout=10) as reply:
        exposition = reply.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(exposition)
        for sample in family.samples
        if sample.name == "pagemill_documents_finished_total"
    )


def test_every_process_logs_json_lines_with_context_and_without_content(
    sessions: sessionmaker[Session],
    redis_broker: str,
    s3_server: str,
    bucket_with_queue: BucketWithQueue,
    fake_model_server: fake.FakeModelServer,
    tmp_path: Path,
) -> None:
    from workers.tasks.documents import enqueue_document

    local_invoice, model_invoice = make_invoice(71, items=3), make_invoice(72, items=3)
    fake_model_server.fields = model_invoice.expected()
    fake_model_server.script(fake.error(529))  # one retry, logged with its request id
    metrics_port = free_port()
    env = {
        "PAGEMILL_LOG_FORMAT": "json",
        "PAGEMILL_S3_ENDPOINT_URL": s3_server,
        "PAGEMILL_SQS_QUEUE_URL": bucket_with_queue.queue_url,
        "PAGEMILL_SQS_WAIT_SECONDS": "1",
        "PAGEMILL_BROKER_URL": redis_broker,
        **devstack.DUMMY_CREDENTIALS,
        "PAGEMILL_PROVIDER": "local",
        "PAGEMILL_ANTHROPIC_API_KEY": API_KEY,
        "PAGEMILL_ANTHROPIC_BASE_URL": fake_model_server.anthropic_base_url,
        "PAGEMILL_PREPARE_CONCURRENCY": "2",
        "PAGEMILL_EXTRACT_CONCURRENCY": "2",
        "PAGEMILL_RETRY_BASE_S": "0.2",
        "PAGEMILL_RETRY_CAP_S": "0.5",
    }
    processes = [
        devstack.spawn("ingest", ["ingest"], env, tmp_path),
        devstack.spawn(
            "worker",
            ["worker", "--beat"],
            {**env, "PAGEMILL_METRICS_PORT": str(metrics_port)},
            tmp_path,
        ),
        devstack.spawn(
            "web",
            ["web", "--port", str(free_port())],
            {**env, "PAGEMILL_WEB_REFRESH_S": "0"},
            tmp_path,
        ),
    ]
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    try:
        s3.put_object(Bucket=bucket, Key="in/local.pdf", Body=render_pdf(local_invoice))
        s3.put_object(Bucket=bucket, Key="in/broken.pdf", Body=corrupt_pdf(b"x"))
        # The intake gives new documents the default provider (local); this one goes to the
        # model: registered here, in a bucket without notifications, and nudged.
        direct = f"{bucket}-direct"
        s3.create_bucket(Bucket=direct)
        put = s3.put_object(Bucket=direct, Key="model.pdf", Body=render_pdf(model_invoice))
        with transaction(sessions) as session:
            model_doc, _ = repo.register_document(
                session,
                ObjectRef(bucket=direct, key="model.pdf", version=put["ETag"].strip('"')),
                "invoice",
                "anthropic",
            )
        enqueue_document(model_doc)

        def final() -> bool:
            assert all(p.alive() for p in processes), [p.tail(20) for p in processes]
            with sessions() as session:
                n = session.execute(
                    text("SELECT count(*) FROM documents WHERE finished_at IS NOT NULL")
                ).scalar_one()
            return int(n) == 3

        assert devstack.wait_for(final, 120, interval=0.5), processes[1].tail(40)
        # One port serves both stage workers: prepare finished two, extract the third.
        url = f"http://127.0.0.1:{metrics_port}/metrics"
        assert devstack.wait_for(lambda: finished_total(url) == 3, 10)
        time.sleep(0.5)  # the last lines of the task reach the log file
    finally:
        for process in processes:
            process.stop()
        with contextlib.suppress(ClientError):
            s3.delete_object(Bucket=f"{bucket}-direct", Key="model.pdf")
            s3.delete_bucket(Bucket=f"{bucket}-direct")

    lines: dict[str, list[dict[str, Any]]] = {}
    for process in processes:
        raw = process.log_path.read_text(errors="replace")
        parsed = []
        for number, line in enumerate(raw.splitlines(), 1):
            if not line.strip():
                continue
            try:
                entry = json.loads(line)
            except ValueError:
                pytest.fail(f"{process.name} line {number} is not JSON: {line[:200]!r}")
            assert isinstance(entry, dict)
            assert {"time", "level", "logger", "message"} <= set(entry), entry
            parsed.append(entry)
        lines[process.name] = parsed
        # Nothing of the documents' content, the prompt or the key, at INFO and above.
        for secret in (
            API_KEY,
            local_invoice.invoice_number,
            model_invoice.invoice_number,
            local_invoice.vendor_name,
            model_invoice.vendor_name,
            model_invoice.customer_name,
            *(str(item["description"]) for item in model_invoice.line_items),
            SYSTEM_PREAMBLE[:40],
        ):
            assert secret not in raw, f"{process.name} logged {secret!r}"

    worker = lines["worker"]
    loggers = {entry["logger"] for entry in worker}
    assert {"celery.worker.strategy", "celery.app.trace", "celery.beat"} <= loggers, loggers
    # Celery's own line on a task's receipt names the task; lines inside a task carry all.
    received = [e for e in worker if "received" in e["message"] and "task_id" in e]
    assert received
    prepare = [e for e in worker if e.get("stage") == "prepare" and "document_id" in e]
    assert prepare and all(e["task_id"] for e in prepare)
    retried = [e for e in worker if "retry" in e["message"] and e.get("stage") == "extract"]
    assert retried and retried[0]["provider_request_id"].startswith("req_")
    finished = [
        e
        for e in worker
        if e["logger"] == "pipeline.usecases.process" and e.get("stage") == "extract"
    ]
    assert finished and finished[-1]["provider_request_id"].startswith("req_")
    assert {e["document_id"] for e in finished} == {e["document_id"] for e in retried}
    assert any(e["logger"] == "workers.intake" for e in lines["ingest"])
    assert any("listening on" in e["message"] for e in lines["web"])
