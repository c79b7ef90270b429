"""Recovery decided by Postgres: leases, the sweep, and a task taking back its own lease."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef, Stage
from pipeline.usecases.recovery import sweep

pytestmark = pytest.mark.integration
LEASE = timedelta(minutes=15)


def _document(sessions: sessionmaker[Session], key: str) -> int:
    with transaction(sessions) as session:
        document_id, _ = repo.register_document(
            session, ObjectRef("b", key, "etag"), "invoice", "local"
        )
    return document_id


def test_a_lease_is_exclusive_except_to_the_task_that_holds_it(
    sessions: sessionmaker[Session],
) -> None:
    document_id = _document(sessions, "a.pdf")
    with transaction(sessions) as session:
        assert repo.claim_document(session, document_id, LEASE, Stage.PREPARE, "task-1")
    with transaction(sessions) as session:
        # A duplicate message (another task id) must not run the document twice at once.
        assert repo.claim_document(session, document_id, LEASE, Stage.PREPARE, "task-2") is None
        # A stray message for the other stage is a no-op too.
        assert repo.claim_document(session, document_id, LEASE, Stage.EXTRACT, "task-1") is None
    with transaction(sessions) as session:
        # The same task retrying after a database outage takes its lease back.
        doc = repo.claim_document(session, document_id, LEASE, Stage.PREPARE, "task-1")
        assert doc is not None and doc.attempts == 2


def test_the_sweep_re_enqueues_an_expired_lease_once_and_a_stuck_pending_document(
    sessions: sessionmaker[Session],
) -> None:
    expired = _document(sessions, "expired.pdf")
    stuck = _document(sessions, "stuck.pdf")
    fresh = _document(sessions, "fresh.pdf")
    with transaction(sessions) as session:
        repo.claim_document(session, expired, LEASE, Stage.PREPARE, "dead-worker")
        session.execute(
            text("UPDATE documents SET lease_until = now() - interval '1 s' WHERE id = :d"),
            {"d": expired},
        )
        session.execute(
            text("UPDATE documents SET updated_at = now() - interval '1 hour' WHERE id = :d"),
            {"d": stuck},
        )
    sent: list[tuple[int, str]] = []

    def enqueue(document_id: int, stage: str) -> None:
        sent.append((document_id, stage))

    first = sweep(sessions, stuck_after=timedelta(minutes=30), enqueue=enqueue)
    again = sweep(sessions, stuck_after=timedelta(minutes=30), enqueue=enqueue)

    assert sorted(first) == sorted([expired, stuck]) and fresh not in first
    assert again == []  # not re-sent on every run while it waits for a worker
    assert sorted(sent) == sorted([(expired, "prepare"), (stuck, "prepare")])
    with transaction(sessions) as session:
        # Anyone may now claim the document the dead worker held.
        assert repo.claim_document(session, expired, LEASE, Stage.PREPARE, "new-task")
