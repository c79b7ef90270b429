"""The waiting mechanism on real Postgres: a document waits in its row and resumes by itself."""

from __future__ import annotations

from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.models import Document
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef, Stage
from pipeline.usecases import waiting
from pipeline.usecases.recovery import requeue_pending, sweep
from pipeline.usecases.waiting import Backoff

pytestmark = pytest.mark.integration
LEASE = timedelta(minutes=15)


def _document(sessions: sessionmaker[Session], key: str) -> int:
    with transaction(sessions) as session:
        document_id, _ = repo.register_document(
            session, ObjectRef("b", key, "etag"), "invoice", "anthropic"
        )
    return document_id


def _row(sessions: sessionmaker[Session], document_id: int) -> Document:
    with sessions() as session:
        doc = session.get(Document, document_id)
        assert doc is not None
        return doc


def _claim(sessions: sessionmaker[Session], document_id: int, owner: str) -> bool:
    with transaction(sessions) as session:
        return repo.claim_document(session, document_id, LEASE, Stage.PREPARE, owner) is not None


def _park(
    sessions: sessionmaker[Session], document_id: int, backoff: Backoff, **kw: object
) -> waiting.Waiting:
    with transaction(sessions) as session:
        parked = waiting.wait_document(
            session, document_id, reason="provider_unavailable", backoff=backoff, **kw
        )  # type: ignore[arg-type]
    assert parked is not None
    return parked


def _age(sessions: sessionmaker[Session], document_id: int, column: str, seconds: int) -> None:
    with transaction(sessions) as session:
        session.execute(
            text(
                f"UPDATE documents SET {column} = now() - make_interval(secs => :s) WHERE id = :d"
            ),
            {"s": seconds, "d": document_id},
        )


def test_a_running_document_waits_only_when_its_task_holds_it(
    sessions: sessionmaker[Session],
) -> None:
    document_id = _document(sessions, "a.pdf")
    assert _claim(sessions, document_id, "task-1")
    with transaction(sessions) as session:
        # Another task's failure report must not park a document it does not hold.
        assert (
            waiting.wait_document(
                session, document_id, reason="x", backoff=Backoff.fixed(60), owner="task-2"
            )
            is None
        )
    parked = _park(sessions, document_id, Backoff.fixed(60), owner="task-1")
    assert 59 <= parked.delay_s <= 60 and parked.retries == 0
    doc = _row(sessions, document_id)
    assert doc.status == "pending" and doc.wait_reason == "provider_unavailable"
    assert doc.lease_owner is None and doc.waiting_since is not None


def test_an_early_message_does_not_start_a_waiting_document(
    sessions: sessionmaker[Session],
) -> None:
    document_id = _document(sessions, "early.pdf")
    _park(sessions, document_id, Backoff.fixed(600))
    assert not _claim(sessions, document_id, "stray-redelivery")
    _age(sessions, document_id, "not_before", 1)  # the wait is over
    assert _claim(sessions, document_id, "on-time")
    doc = _row(sessions, document_id)
    assert doc.status == "processing" and doc.not_before is None and doc.wait_reason is None
    # The run of waits goes on until the document moves on: the backoff keeps growing.
    assert doc.waiting_since is not None


def test_the_backoff_grows_with_the_wait_and_stays_under_its_cap(
    sessions: sessionmaker[Session],
) -> None:
    document_id = _document(sessions, "backoff.pdf")
    first = _park(sessions, document_id, Backoff(base_s=2, cap_s=300))
    assert 1 <= first.delay_s <= 2  # half to all of the base
    _age(sessions, document_id, "waiting_since", 100)
    later = _park(sessions, document_id, Backoff(base_s=2, cap_s=300))
    assert 50 <= later.delay_s <= 100 and 100 <= later.waited_s < 110
    _age(sessions, document_id, "waiting_since", 7200)
    capped = _park(sessions, document_id, Backoff(base_s=2, cap_s=300))
    assert 150 <= capped.delay_s <= 300
    # A server's retry-after is a floor.
    floored = _park(sessions, document_id, Backoff(base_s=2, cap_s=300, floor_s=500))
    assert 499 <= floored.delay_s <= 501


def test_only_failures_of_the_document_count_as_retries(sessions: sessionmaker[Session]) -> None:
    document_id = _document(sessions, "count.pdf")
    for _ in range(3):
        outage = _park(sessions, document_id, Backoff.fixed(1), counts=False)
    assert outage.retries == 0
    counted = _park(sessions, document_id, Backoff.fixed(1), counts=True)
    assert counted.retries == 1


def test_the_sweep_resumes_due_documents_once_and_leaves_waiting_ones(
    sessions: sessionmaker[Session],
) -> None:
    due = _document(sessions, "due.pdf")
    later = _document(sessions, "later.pdf")
    _park(sessions, due, Backoff.fixed(60))
    _park(sessions, later, Backoff.fixed(3600))
    _age(sessions, due, "not_before", 1)
    # Both waited longer than the stuck threshold: the stuck rule must not cut a wait short.
    _age(sessions, due, "updated_at", 7200)
    _age(sessions, later, "updated_at", 7200)
    sent: list[tuple[int, str]] = []

    def enqueue(document_id: int, stage: str) -> None:
        sent.append((document_id, stage))

    assert waiting.resume_due(sessions, enqueue) == [due]
    assert waiting.resume_due(sessions, enqueue) == []  # sent once, not at every sweep
    assert sweep(sessions, stuck_after=timedelta(minutes=30), enqueue=enqueue) == []
    assert sent == [(due, "prepare")]
    assert _row(sessions, due).not_before is None


def test_a_broker_that_is_down_leaves_the_document_due(sessions: sessionmaker[Session]) -> None:
    document_id = _document(sessions, "nudge.pdf")
    _park(sessions, document_id, Backoff.fixed(60))
    _age(sessions, document_id, "not_before", 1)

    def broker_down(document_id: int, stage: str) -> None:
        raise ConnectionError("broker down")

    with pytest.raises(ConnectionError):
        waiting.resume_due(sessions, broker_down)
    assert _row(sessions, document_id).not_before is not None  # still due: the next sweep


def test_a_dependency_that_is_back_wakes_what_waits_for_it(
    sessions: sessionmaker[Session],
) -> None:
    provider = _document(sessions, "provider.pdf")
    budget = _document(sessions, "budget.pdf")
    _park(sessions, provider, Backoff.fixed(3600))
    with transaction(sessions) as session:
        waiting.wait_document(
            session, budget, reason="budget_exceeded", backoff=Backoff.fixed(3600)
        )
        assert waiting.wake(session, ["provider_unavailable"]) == 1
    assert _claim(sessions, provider, "resumed")
    assert not _claim(sessions, budget, "too-soon")


def test_a_nudge_that_could_not_be_sent_is_owed_by_postgres(
    sessions: sessionmaker[Session],
) -> None:
    document_id = _document(sessions, "owed.pdf")
    with transaction(sessions) as session:
        assert waiting.mark_due(session, document_id, "broker_unavailable")
    sent: list[int] = []
    assert waiting.resume_due(sessions, lambda d, s: sent.append(d)) == [document_id]
    assert sent == [document_id]


def test_a_broker_restarted_empty_gets_every_pending_document_again(
    sessions: sessionmaker[Session],
) -> None:
    queued = [_document(sessions, f"queued-{n}.pdf") for n in range(3)]
    running = _document(sessions, "running.pdf")
    parked = _document(sessions, "parked.pdf")
    assert _claim(sessions, running, "task")
    _park(sessions, parked, Backoff.fixed(600))
    sent: list[int] = []
    requeue_pending(sessions, lambda d, s: sent.append(d), batch=2)
    # Fresh documents whatever PAGEMILL_STUCK_AFTER_S says; not the running one (its task
    # holds it), nor the waiting one (the sweep resumes it when its wait is over).
    assert sorted(sent) == sorted(queued)


def test_moving_on_ends_the_run_of_waits(sessions: sessionmaker[Session]) -> None:
    document_id = _document(sessions, "moves.pdf")
    _park(sessions, document_id, Backoff.fixed(1))
    _age(sessions, document_id, "not_before", 1)
    assert _claim(sessions, document_id, "task")
    with transaction(sessions) as session:
        repo.finish_document(session, document_id, DocumentStatus.DONE)
    doc = _row(sessions, document_id)
    assert doc.waiting_since is None and doc.not_before is None and doc.wait_reason is None
