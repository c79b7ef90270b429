"""Metrics count what Postgres holds: a finished document, a completed call and a dead letter
count once, after their transaction commits, never when it rolls back or repeats."""

from __future__ import annotations

import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from sqlalchemy.orm import Session, sessionmaker

from pipeline import metrics
from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import CallOutcome, CallRecord, DocumentStatus, ObjectRef, Stage, Usage
from pipeline.errors import ErrorCategory, PermanentError

pytestmark = pytest.mark.integration


def value(name: str, **labels: str) -> float:
    for family in metrics.RecordedMetrics().collect():
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def processing_document(sessions: sessionmaker[Session], pages: int) -> int:
    with transaction(sessions) as session:
        document_id, _ = repo.register_document(
            session, ObjectRef(bucket="m", key=str(uuid.uuid4()), version="1"), "receipt", "x"
        )
        doc = repo.claim_document(session, document_id, timedelta(minutes=5), Stage.PREPARE)
        assert doc is not None
        repo.record_source(
            session,
            document_id,
            repo.SourceFacts(
                size=1, sha256="0", content_type="application/pdf", page_count=pages, repaired=False
            ),
        )
    return document_id


class Rollback(Exception):
    pass


def test_a_finished_document_counts_once_and_only_when_committed(
    sessions: sessionmaker[Session],
) -> None:
    finished = {"status": "done", "schema": "receipt"}
    before = value("pagemill_documents_finished_total", **finished)
    pages_before = value("pagemill_pages_total", schema="receipt")
    document_id = processing_document(sessions, pages=3)

    with pytest.raises(Rollback), transaction(sessions) as session:
        assert repo.finish_document(session, document_id, DocumentStatus.DONE)
        raise Rollback  # e.g. the result insert after it failed
    assert value("pagemill_documents_finished_total", **finished) == before

    with transaction(sessions) as session:
        assert repo.finish_document(session, document_id, DocumentStatus.DONE)
    assert value("pagemill_documents_finished_total", **finished) == before + 1
    assert value("pagemill_pages_total", schema="receipt") == pages_before + 3

    with transaction(sessions) as session:  # a duplicate message: not ours to finish again
        assert not repo.finish_document(session, document_id, DocumentStatus.DONE)
    assert value("pagemill_documents_finished_total", **finished) == before + 1


def test_a_call_counts_when_its_outcome_is_written_once(sessions: sessionmaker[Session]) -> None:
    document_id = processing_document(sessions, pages=1)
    model = {"provider": "anthropic", "model": "metrics-test"}
    started = CallRecord(
        provider="anthropic",
        model="metrics-test",
        attempt=1,
        outcome=CallOutcome.STARTED,
        latency_ms=0,
        usage=Usage(),
        cost_usd=None,
    )
    done = CallRecord(
        provider="anthropic",
        model="metrics-test",
        attempt=1,
        outcome=CallOutcome.OK,
        latency_ms=2500,
        usage=Usage(input_tokens=1000, output_tokens=100),
        cost_usd=Decimal("0.00450000"),
        call_id=started.call_id,
    )
    calls_before = value("pagemill_model_call_seconds_count", outcome="ok", **model)
    for records in ([started], [done], [done]):  # the second `done` is a repeated write
        with transaction(sessions) as session:
            repo.record_calls(session, document_id, records)
    assert value("pagemill_model_call_seconds_count", outcome="ok", **model) == calls_before + 1
    assert value("pagemill_tokens_total", kind="input", **model) == 1000
    assert value("pagemill_cost_usd_total", **model) == pytest.approx(0.0045)


def test_a_dead_letter_counts_once(sessions: sessionmaker[Session]) -> None:
    document_id = processing_document(sessions, pages=1)
    error = PermanentError(ErrorCategory.ENCRYPTED, "password protected")
    before = value("pagemill_dead_letters_total", category="encrypted")
    for _ in range(2):
        with transaction(sessions) as session:
            repo.add_dead_letter(session, document_id, "prepare", error, 1)
    assert value("pagemill_dead_letters_total", category="encrypted") == before + 1
