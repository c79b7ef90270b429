"""The dashboard in headless Chromium, over a pipeline run on real services.

Documents are uploaded to S3 (moto over HTTP), announced on SQS, taken in by `pagemill ingest`,
processed by a Celery worker with the offline extractor, and land in Postgres; `pagemill web`
serves the dashboard. Then a person's path through it: the overview's counts, a document's page
image with its field boxes, a reviewer's correction (saved, and in the ground-truth export that
`pagemill eval` reads), a dead letter replayed. Screenshots go to tests/artifacts/screenshots/.
"""

from __future__ import annotations

import io
import json
import urllib.request
import zipfile
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker
from typer.testing import CliRunner

from pipeline.evaluation import load_cases
from pipeline.settings import get_settings
from pipeline.synthetic import corrupt_pdf, make_invoice, render_pdf
from tests.browser.conftest import free_port
from tests.support.s3_fixtures import BucketWithQueue
from workers import devstack
from workers.cli import app as cli_app

pytestmark = [pytest.mark.integration, pytest.mark.browser]

FINAL = ("done", "needs_review", "failed")


@pytest.fixture
def stack(
    s3_server: str, bucket_with_queue: BucketWithQueue, redis_broker: str, tmp_path: Path
) -> Iterator[str]:
    """ingest + worker + `pagemill web`; yields the dashboard's URL."""
    port = free_port()
    env = {
        "PAGEMILL_S3_ENDPOINT_URL": s3_server,
        "PAGEMILL_SQS_QUEUE_URL": bucket_with_queue.queue_url,
        "PAGEMILL_SQS_WAIT_SECONDS": "1",
        "PAGEMILL_BROKER_URL": redis_broker,
        "PAGEMILL_WEB_REFRESH_S": "0",  # no reload while the test clicks
        **devstack.DUMMY_CREDENTIALS,
    }
    processes = [
        devstack.spawn("ingest", ["ingest"], env, tmp_path),
        devstack.spawn("worker", ["worker", "--concurrency", "2"], env, tmp_path),
        devstack.spawn("web", ["web", "--port", str(port)], env, tmp_path),
    ]
    url = f"http://127.0.0.1:{port}"

    def ready() -> bool:
        try:
            with urllib.request.urlopen(f"{url}/readyz", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        assert devstack.wait_for(ready, 60), "pagemill web did not start:\n" + processes[2].tail()
        yield url
    finally:
        for process in processes:
            process.stop()
        for process in processes:
            print(f"--- {process.name} ---\n{process.tail(30)}")


def wait_final(sessions: sessionmaker[Session], bucket: str, count: int) -> None:
    def final() -> bool:
        with sessions() as session:
            n = session.execute(
                text("SELECT count(*) FROM documents WHERE bucket = :b AND status = ANY(:f)"),
                {"b": bucket, "f": list(FINAL)},
            ).scalar_one()
        return int(n) >= count

    assert devstack.wait_for(final, 120, interval=0.5), "documents did not reach a final state"


def status_counts(sessions: sessionmaker[Session]) -> dict[str, int]:
    with sessions() as session:
        rows = session.execute(text("SELECT status, count(*) FROM documents GROUP BY status"))
        return {status: int(n) for status, n in rows}


def doc_id(sessions: sessionmaker[Session], key: str) -> int:
    with sessions() as session:
        return int(
            session.execute(
                text("SELECT id FROM documents WHERE key = :k"), {"k": key}
            ).scalar_one()
        )


def test_a_person_uses_the_dashboard_on_a_real_pipeline_run(
    stack: str,
    sessions: sessionmaker[Session],
    bucket_with_queue: BucketWithQueue,
    browser: Any,
    screenshots: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    s3, bucket = bucket_with_queue.s3, bucket_with_queue.bucket
    clean = make_invoice(61, items=3)
    doubtful = make_invoice(62, items=3)
    right_amount = doubtful.line_items[1]["amount"]
    doubtful.line_items[1]["amount"] = Decimal("999.99")  # breaks quantity x price: review
    uploads = {
        "in/clean invoice.pdf": render_pdf(clean),
        "in/needs a look.pdf": render_pdf(doubtful),
        "in/broken.pdf": corrupt_pdf(b"x"),
    }
    for key, body in uploads.items():
        s3.put_object(Bucket=bucket, Key=key, Body=body, ContentType="application/pdf")
    wait_final(sessions, bucket, len(uploads))
    counts = status_counts(sessions)
    assert counts == {"done": 1, "needs_review": 1, "failed": 1}

    page = browser.new_page(viewport={"width": 1366, "height": 900}, accept_downloads=True)
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)

    # Overview: the counts are the database's.
    page.goto(stack + "/")
    for card, status in (
        ("#card-done", "done"),
        ("#card-needs-review", "needs_review"),
        ("#card-failed", "failed"),
    ):
        assert page.locator(f"{card} .value").inner_text() == str(counts[status])
    assert page.locator("#card-dead-letters .value").inner_text() == "1"
    latency = page.locator("#latency tbody tr")
    assert latency.count() == 5
    assert "prepare" in latency.nth(1).inner_text()
    page.screenshot(path=screenshots / "overview.png", full_page=True)

    # Documents: the list, and a search by invoice number.
    page.click("#card-done")
    assert page.locator("#documents tbody tr").count() == 1
    page.goto(stack + "/documents")
    assert page.locator("#documents tbody tr").count() == 3
    page.fill("input[name=q]", clean.invoice_number)
    page.click("form.filters button[type=submit]")
    rows = page.locator("#documents tbody tr")
    assert rows.count() == 1
    assert "in/clean invoice.pdf" in rows.first.inner_text()
    page.screenshot(path=screenshots / "documents.png", full_page=True)

    # A document: its page image, and a box for each value found on it.
    rows.first.locator("a").first.click()
    page.wait_for_load_state("networkidle")
    image = page.locator("figure.page img").first
    assert image.evaluate("img => img.complete && img.naturalWidth > 0")
    boxes = page.locator("figure.page svg.boxes g.box")
    fields_found = {boxes.nth(i).get_attribute("data-field") for i in range(boxes.count())}
    assert {"invoice_number", "total", "vendor_name"} <= fields_found
    total_box = page.locator('svg.boxes g.box[data-field="total"] rect').bounding_box()
    image_box = image.bounding_box()
    assert total_box is not None and image_box is not None
    # The total is printed in the right half of the page, below the header.
    assert (
        image_box["x"] + image_box["width"] / 2
        < total_box["x"]
        < image_box["x"] + image_box["width"]
    )
    assert total_box["y"] > image_box["y"] + image_box["height"] * 0.2
    timeline = page.locator("#timeline tbody tr")
    assert timeline.count() >= 3  # registered, claimed, done
    assert "done" in timeline.last.inner_text()
    page.screenshot(path=screenshots / "document.png", full_page=True)

    # Review: correct the doubtful amount; the correction is stored and exported.
    review_id = doc_id(sessions, "in/needs a look.pdf")
    page.goto(stack + "/review")
    page.click(f'#review-queue a[href="/documents/{review_id}/review"]')
    doubtful_rows = page.locator("#review-fields tr.doubtful")
    assert doubtful_rows.count() >= 1
    amount = page.locator('input[name="field:line_items[1].amount"]')
    assert amount.input_value() == "999.99"
    page.screenshot(path=screenshots / "review.png", full_page=True)
    amount.fill(str(right_amount))
    page.fill("#reviewer", "Rita Reviewer")
    page.click("#save-review")
    page.wait_for_selector("#reviewed-notice")
    assert "done" in page.locator("h1 .badge").inner_text()
    corrections = page.locator("#corrections tbody tr")
    assert corrections.count() >= 1
    corrected = corrections.filter(has_text="line_items[1].amount")
    assert "999.99" in corrected.inner_text() and str(right_amount) in corrected.inner_text()
    assert "Rita Reviewer" in corrected.inner_text()
    assert "review:Rita Reviewer" in page.locator("#timeline tbody tr").last.inner_text()
    page.screenshot(path=screenshots / "reviewed.png", full_page=True)

    page.goto(stack + "/review")
    with page.expect_download() as download_info:
        page.click("#export-link")
    archive = zipfile.ZipFile(io.BytesIO(Path(download_info.value.path()).read_bytes()))
    gt_names = [n for n in archive.namelist() if n.startswith("pagemill-review/gt/")]
    assert len(gt_names) == 1
    exported = json.loads(archive.read(gt_names[0]))
    assert exported["line_items"][1]["amount"] == str(right_amount)
    assert exported["fields"]["invoice_number"] == doubtful.invoice_number
    assert archive.read("pagemill-review/docs/" + exported["doc"]) == uploads["in/needs a look.pdf"]

    # The same export from the command line is a folder `pagemill eval` loads.
    out_dir = tmp_path / "reviewed"
    monkeypatch.setenv("PAGEMILL_S3_ENDPOINT_URL", s3.meta.endpoint_url)
    for name, value in devstack.DUMMY_CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(cli_app, ["review", "export", str(out_dir)])
    finally:
        get_settings.cache_clear()
    assert result.exit_code == 0, result.output
    assert "1 reviewed document(s) written" in result.output
    (case,) = load_cases(out_dir)
    assert case.fields["total"] == exported["fields"]["total"]
    assert case.line_items[1]["amount"] == str(right_amount)

    # Dead letters: the broken file is there; replaying sends it through the pipeline again.
    broken_id = doc_id(sessions, "in/broken.pdf")
    page.goto(stack + "/dead-letters")
    letters = page.locator("#letters tbody tr")
    assert letters.count() == 1
    assert "in/broken.pdf" in letters.first.inner_text()
    page.screenshot(path=screenshots / "dead-letters.png", full_page=True)
    letters.first.locator("button.replay").click()
    page.wait_for_selector("#dlq-notice")
    assert f"document {broken_id}" in page.locator("#dlq-notice").inner_text()

    def replayed_and_failed_again() -> bool:
        with sessions() as session:
            changes = session.execute(
                text(
                    "SELECT from_status, to_status, worker FROM document_events"
                    " WHERE document_id = :id ORDER BY id"
                ),
                {"id": broken_id},
            ).all()
        replay = ("failed", "pending", "dashboard:replay")
        return replay in [tuple(c) for c in changes] and changes[-1][1] == "failed"

    assert devstack.wait_for(replayed_and_failed_again, 60, interval=0.5)
    page.goto(stack + "/dead-letters?all=1")
    assert "replayed 1×" in page.locator("#letters").inner_text()
    assert page.locator("#letters tbody tr").count() == 2  # the replayed letter and a new one
    page.goto(stack + f"/documents/{broken_id}")
    page.screenshot(path=screenshots / "dead-letter-replayed.png", full_page=True)

    assert problems == []
