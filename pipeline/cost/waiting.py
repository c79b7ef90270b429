"""Documents held back by cost control wait, on the generic waiting mechanism
(pipeline/usecases/waiting.py: pending, `not_before`, `wait_reason`), and resume by themselves:

* `budget_exceeded`: a spending cap would be exceeded; until the period rolls over (checked
  again every PAGEMILL_BUDGET_RECHECK_S), or at once when `pagemill budget set` raises it;
* `provider_down`: the model's circuit is open and no secondary can take the call; until the
  circuit lets a probe through;
* `batch`: an answer is due from the batch API; the batch runner wakes the document when it
  lands (the wait's end is only a backstop).

None of these counts against the document's retries.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline.cost.hooks import AwaitingBatch, BudgetExceeded, ProviderHeld, Waiting
from pipeline.db import repository as repo
from pipeline.db.models import Document
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus
from pipeline.errors import ErrorCategory, TransientError
from pipeline.usecases.waiting import Backoff, resume_due, wait_document, wake

BUDGET_EXCEEDED = BudgetExceeded.reason
PROVIDER_DOWN = ProviderHeld.reason
BATCH = AwaitingBatch.reason

# When a wait has no known end: a batch is answered within 24 hours (the runner wakes the
# document sooner); an open circuit lets a probe through within its open period.
_DEFAULT_WAIT = {BATCH: timedelta(hours=25), PROVIDER_DOWN: timedelta(seconds=30)}


def hold(session: Session, document_id: int, waiting: Waiting, owner: str | None) -> None:
    """Park the document (ours: processing under `owner`) until `waiting.until`."""
    now = datetime.now(UTC)
    until = waiting.until or now + _DEFAULT_WAIT.get(waiting.reason, timedelta(minutes=5))
    seconds = max((until - now).total_seconds(), 1.0)
    parked = wait_document(
        session,
        document_id,
        reason=waiting.reason,
        backoff=Backoff.fixed(seconds),
        owner=owner,
        error=(waiting.reason, waiting.message),
    )
    if parked is None and owner is None:
        # Run without a task id (in-process callers): the lease has no owner to match; give
        # the document back first, then park it as pending.
        repo.release_for_retry(
            session, document_id, TransientError(ErrorCategory.INTERNAL, waiting.message)
        )
        wait_document(
            session,
            document_id,
            reason=waiting.reason,
            backoff=Backoff.fixed(seconds),
            error=(waiting.reason, waiting.message),
        )


def wake_documents(
    sessions: sessionmaker[Session],
    document_ids: Iterable[int],
    enqueue: Callable[[int, str], None],
) -> list[int]:
    """These documents' waits are over (their batch answers landed): due now, and nudged. A
    nudge that is lost leaves them due for the sweep."""
    ids = sorted(set(document_ids))
    if not ids:
        return []
    with transaction(sessions) as session:
        rows = session.execute(
            update(Document)
            .where(
                Document.id.in_(ids),
                Document.status == DocumentStatus.PENDING.value,
                Document.not_before.is_not(None),
            )
            .values(not_before=func.now())
            .returning(Document.id, Document.stage)
        ).all()
    for row in rows:
        enqueue(row.id, row.stage)
    return [row.id for row in rows]


def wake_reason(
    sessions: sessionmaker[Session], reason: str, enqueue: Callable[[int, str], None]
) -> list[int]:
    """Every document waiting for `reason` is due now and is enqueued (a cap was raised)."""
    with transaction(sessions) as session:
        woken = wake(session, [reason])
    return resume_due(sessions, enqueue) if woken else []


def waiting_count(session: Session, reason: str) -> int:
    return int(
        session.execute(
            select(func.count())
            .select_from(Document)
            .where(
                Document.status == DocumentStatus.PENDING.value,
                Document.wait_reason == reason,
            )
        ).scalar_one()
    )
