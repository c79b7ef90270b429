"""Page images are kept while a document may need them, then deleted (item 12 of issue 10)."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef, Stage
from pipeline.usecases.retention import delete_expired_payloads
from tests.support.fake_model_fixtures import sample_page

pytestmark = pytest.mark.integration


def _document_with_pages(sessions: sessionmaker[Session], key: str) -> int:
    with transaction(sessions) as session:
        document_id, _ = repo.register_document(
            session, ObjectRef("b", key, "etag"), "invoice", "anthropic"
        )
        repo.claim_document(session, document_id, timedelta(minutes=5), Stage.PREPARE, "t")
        pages = [sample_page(i) for i in range(2)]
        repo.record_pages(session, document_id, pages)
        repo.store_payloads(session, document_id, pages)
    return document_id


def _finish(sessions: sessionmaker[Session], document_id: int, days_ago: float) -> None:
    with transaction(sessions) as session:
        repo.finish_document(session, document_id, DocumentStatus.DONE)
        session.execute(
            text(
                "UPDATE documents SET finished_at = now() - make_interval(secs => :s) WHERE id = :d"
            ),
            {"s": days_ago * 86400, "d": document_id},
        )


def _payloads(sessions: sessionmaker[Session]) -> dict[int, int]:
    with sessions() as session:
        rows = session.execute(
            text("SELECT document_id, count(*) FROM page_payloads GROUP BY document_id")
        )
        return {row[0]: row[1] for row in rows}


def test_page_images_go_once_the_retention_after_the_final_state_has_passed(
    sessions: sessionmaker[Session],
) -> None:
    old = _document_with_pages(sessions, "old.pdf")
    recent = _document_with_pages(sessions, "recent.pdf")
    running = _document_with_pages(sessions, "running.pdf")
    _finish(sessions, old, days_ago=31)
    _finish(sessions, recent, days_ago=29)

    assert delete_expired_payloads(sessions, timedelta(days=30), batch=1) == 1
    # The review page can still show the recent document; the running one needs its pages.
    assert _payloads(sessions) == {recent: 2, running: 2}
    with sessions() as session:
        pages = session.execute(
            text("SELECT count(*) FROM pages WHERE document_id = :d"), {"d": old}
        ).scalar_one()
    assert pages == 2  # what was rendered stays on record; only the image bytes go
    assert delete_expired_payloads(sessions, timedelta(days=30)) == 0


def test_the_retention_command_uses_the_setting(sessions: sessionmaker[Session]) -> None:
    done = _document_with_pages(sessions, "done.pdf")
    _finish(sessions, done, days_ago=2)
    out = subprocess.run(
        [sys.executable, "-m", "workers", "retention"],
        env={**os.environ, "PAGEMILL_PAYLOAD_RETENTION_DAYS": "1"},
        capture_output=True,
        text=True,
        check=True,
    )
    assert "1 document(s)" in out.stdout
    assert _payloads(sessions) == {}
