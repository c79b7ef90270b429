"""E-invoices and duplicate invoices through the document use case, against real Postgres, the
S3 server over HTTP and the fake model API (which must never be asked)."""

from __future__ import annotations

import threading
from typing import Any

import pytest
from sqlalchemy import text

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ExtractionResult
from pipeline.duplicates import check_duplicates
from pipeline.synthetic import make_invoice
from pipeline.usecases.process import Collaborators
from tests.support.einvoices import BILLION_LAUGHS, changed, facturx_pdf, ubl_xml
from tests.support.fake_model_server import FakeModelServer
from tests.support.pipeline_helpers import calls, document, process_document, upload
from tests.support.s3_fixtures import BucketWithQueue

pytestmark = pytest.mark.integration


def _row(deps: Collaborators, document_id: int) -> Any:
    with deps.sessions() as session:
        return session.execute(
            text("SELECT * FROM invoice_results WHERE document_id = :d"), {"d": document_id}
        ).one()


def _reasons(deps: Collaborators, document_id: int) -> list[str]:
    with deps.sessions() as session:
        reasons: list[str] = session.execute(
            text("SELECT review_reasons FROM extractions WHERE document_id = :d"),
            {"d": document_id},
        ).scalar_one()
    return reasons


def test_a_facturx_pdf_is_read_from_its_xml_whatever_the_provider(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(41)
    doc_id = upload(deps, bucket_with_queue.bucket, "in/fx.pdf", facturx_pdf(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    assert fake_model_server.request_count == 0
    row = _row(deps, doc_id)
    assert row.provider == "einvoice" and row.model == "cii-d16b:en16931"
    assert row.invoice_number == invoice.invoice_number and row.total == invoice.total
    assert row.calls == 1 and row.cost_usd == 0 and row.unpriced_calls == 0
    [call] = calls(deps, doc_id)
    assert call.provider == "einvoice" and call.outcome == "ok" and call.cost_usd == 0


def test_an_xml_file_in_the_bucket_is_a_document(
    deps: Collaborators, bucket_with_queue: BucketWithQueue, fake_model_server: FakeModelServer
) -> None:
    invoice = make_invoice(42)
    doc_id = upload(deps, bucket_with_queue.bucket, "peppol/inv.xml", ubl_xml(invoice), "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.DONE

    doc = document(deps, doc_id)
    assert doc.content_type == "application/xml" and doc.page_count == 0
    row = _row(deps, doc_id)
    assert row.model == "ubl-2.1:peppol-bis-3" and row.line_item_count == len(invoice.line_items)
    assert fake_model_server.request_count == 0


def test_a_hostile_xml_file_fails_with_bad_input_and_a_dead_letter(
    deps: Collaborators, bucket_with_queue: BucketWithQueue
) -> None:
    doc_id = upload(deps, bucket_with_queue.bucket, "lol.xml", BILLION_LAUGHS, "anthropic")

    assert process_document(deps, doc_id) is DocumentStatus.FAILED

    doc = document(deps, doc_id)
    assert doc.error_category == "bad_input" and "DTD" in (doc.error_message or "")
    with deps.sessions() as session:
        letters = session.execute(
            text("SELECT error_category FROM dead_letters WHERE document_id = :d"), {"d": doc_id}
        ).scalars()
        assert list(letters) == ["bad_input"]


def test_a_second_copy_of_an_invoice_is_flagged_and_listed(
    deps: Collaborators, bucket_with_queue: BucketWithQueue
) -> None:
    invoice = make_invoice(43)
    bucket = bucket_with_queue.bucket
    first = upload(deps, bucket, "ap/original.pdf", facturx_pdf(invoice), "local")
    # The resend writes the vendor and number differently: case, spaces, punctuation, zeros.
    resend = changed(
        invoice,
        vendor_name=invoice.vendor_name.upper().replace(" ", "  ") + ".",
        invoice_number=invoice.invoice_number.lower().replace("-", " ").replace("000", "0"),
    )
    second = upload(deps, bucket, "ap/resent.pdf", facturx_pdf(resend), "local")
    other = upload(
        deps, bucket, "ap/other.pdf", facturx_pdf(changed(invoice, invoice_number="X-1")), "local"
    )

    assert process_document(deps, first) is DocumentStatus.DONE
    assert process_document(deps, second) is DocumentStatus.NEEDS_REVIEW
    assert process_document(deps, other) is DocumentStatus.DONE

    [reason] = _reasons(deps, second)
    assert reason.startswith(f"possible duplicate of document {first} (ap/original.pdf")
    assert f"same vendor, invoice number and total {invoice.total}" in reason
    with deps.sessions() as session:
        listed = session.execute(text("SELECT * FROM invoice_duplicates")).all()
    assert [(r.document_id, r.duplicate_of, r.same_total) for r in listed] == [
        (second, first, True)
    ]


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("Lieferant GmbH & Co. KG", "LIEFERANT", True),
        ("Société Hôtelière du Pacano", "societe hoteliere du pacano SAS", True),
        ("Atelier Berthier S.A.R.L.", "Atelier Berthier SARL", True),
        ("Northwind Ltd", "Northwind Traders Ltd", False),
    ],
)
def test_vendor_keys(deps: Collaborators, a: str, b: str, same: bool) -> None:
    with deps.sessions() as session:
        keys = session.execute(
            text("SELECT pagemill_vendor_key(:a), pagemill_vendor_key(:b)"), {"a": a, "b": b}
        ).one()
    assert (keys[0] == keys[1]) is same, keys


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("RE-2024/0042", "re 2024 42", True),
        ("#00123", "123", True),
        ("INV-2024-001", "INV-2024-010", False),
        ("A10", "A100", False),
    ],
)
def test_invoice_number_keys(deps: Collaborators, a: str, b: str, same: bool) -> None:
    with deps.sessions() as session:
        keys = session.execute(
            text("SELECT pagemill_invoice_number_key(:a), pagemill_invoice_number_key(:b)"),
            {"a": a, "b": b},
        ).one()
    assert (keys[0] == keys[1]) is same, keys


def _result(data: dict[str, Any]) -> ExtractionResult:
    return ExtractionResult(
        schema_name="invoice",
        schema_version="1",
        provider="einvoice",
        model="test",
        data=data,
        valid=True,
        errors=[],
        calls=[],
    )


def test_two_copies_finishing_at_once_are_caught(
    deps: Collaborators, bucket_with_queue: BucketWithQueue
) -> None:
    """The second finisher waits on the key's lock until the first commits, then sees it
    (without the lock both would check before either commits and both would be 'done')."""
    data = {"vendor_name": "Contoso Office GmbH", "invoice_number": "INV-7", "total": "10.00"}
    bucket = bucket_with_queue.bucket
    a = upload(deps, bucket, "a.pdf", b"%PDF-1.7 a", "local")
    b = upload(deps, bucket, "b.pdf", b"%PDF-1.7 b", "local")
    found_by_b: list[list[str]] = []
    b_pid: list[int] = []

    def finish_b() -> None:
        with transaction(deps.sessions) as session:
            b_pid.append(session.execute(text("SELECT pg_backend_pid()")).scalar_one())
            reasons = check_duplicates(session, b, "invoice", data)
            repo.save_extraction(session, b, _result(data))
            repo.finish_document(session, b, DocumentStatus.NEEDS_REVIEW)
        found_by_b.append(reasons)

    with transaction(deps.sessions) as session:
        assert check_duplicates(session, a, "invoice", data) == []
        repo.save_extraction(session, a, _result(data))
        repo.finish_document(session, a, DocumentStatus.DONE)
        worker = threading.Thread(target=finish_b)
        worker.start()
        # Before A commits, B must be waiting on the advisory lock (not reading a snapshot
        # without A in it).
        with deps.sessions() as observer:
            for _ in range(500):
                waiting = (
                    b_pid
                    and observer.execute(
                        text("SELECT wait_event FROM pg_stat_activity WHERE pid = :p"),
                        {"p": b_pid[0]},
                    ).scalar_one_or_none()
                    == "advisory"
                )
                if waiting:
                    break
                threading.Event().wait(0.01)
        assert waiting, "the second finisher did not wait for the first"
    worker.join(timeout=30)

    [[reason]] = found_by_b
    assert reason.startswith(f"possible duplicate of document {a} (a.pdf")
