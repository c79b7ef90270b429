"""`pagemill status` and `pagemill results` on documents the pipeline really processed."""

from __future__ import annotations

import csv
import io
import json

import pytest
from typer.testing import CliRunner

from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf
from pipeline.usecases.process import Collaborators
from tests.support.pipeline_helpers import process_document, upload
from tests.support.s3_fixtures import BucketWithQueue
from workers.cli import app

pytestmark = pytest.mark.integration


@pytest.fixture
def processed(deps: Collaborators, bucket_with_queue: BucketWithQueue, redis_broker: str) -> None:
    bucket = bucket_with_queue.bucket
    done = upload(deps, bucket, "done.pdf", render_pdf(make_invoice(61)), "local")
    broken = upload(deps, bucket, "broken.pdf", corrupt_pdf(b"x"), "local")
    upload(deps, bucket, "waiting.pdf", render_pdf(make_invoice(62)), "local")  # never processed
    assert str(process_document(deps, done)) in ("done", "needs_review")
    assert str(process_document(deps, broken)) == "failed"


def test_status_once_as_json(processed: None) -> None:
    result = CliRunner().invoke(app, ["status", "--once", "--format", "json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    # Dead letters are rows in Postgres, not messages: counted below, not as a queue.
    assert status["queues"] == {"prepare": 0, "extract": 0, "maintenance": 0}
    assert status["backlog"] == {"prepare": {"pending": 1}}
    assert status["in_flight"] == {}
    assert status["oldest_pending_age_s"] >= 0
    assert sum(status["finished_last_hour"].values()) == 2
    assert status["finished_last_hour"]["failed"] == 1
    assert status["pages_per_minute"] == round(1 / status["window_minutes"], 2)
    assert status["dead_letters"]["open"] == 1
    assert status["dead_letters"]["by_category"] == {"bad_input": 1}
    # The local extractor's call is free: a plain zero, in the money format of every output.
    assert status["cost_today_usd"] == "0.00000000"
    assert status["cost_today_by_model"] == {"local:local-rules-1": "0.00000000"}
    assert {row["stage"] for row in status["stage_latency"]} >= {"queue_wait", "prepare"}


def test_status_table_once(processed: None) -> None:
    result = CliRunner().invoke(app, ["status", "--once"], env={"COLUMNS": "160"})
    assert result.exit_code == 0, result.output
    for heading in ("work", "stage latency", "cost today", "dead letters", "bad_input"):
        assert heading in result.output


def test_results_csv_prints_money_as_plain_decimals(processed: None) -> None:
    result = CliRunner().invoke(app, ["results", "--format", "csv"])
    assert result.exit_code == 0, result.output
    rows = {row["key"]: row for row in csv.DictReader(io.StringIO(result.output))}
    assert rows["done.pdf"]["cost_usd"] == "0.00000000"  # was 0E-8
    assert "E-" not in result.output
    listed = json.loads(CliRunner().invoke(app, ["results", "--format", "json"]).output)
    assert {r["key"]: r["cost_usd"] for r in listed}["done.pdf"] == "0.00000000"
