"""Documents held back by cost control wait (pending, with a visible reason) and resume by
themselves: a spending cap (`budget_exceeded`), an open circuit with no secondary
(`provider_down`), an answer due from the batch API (`batch`).

INTERIM: until the generic waiting mechanism (branch `outages`) is merged, a held document is
given back as pending and the sweep picks it up again."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from sqlalchemy.orm import Session, sessionmaker

from pipeline.cost.hooks import Waiting
from pipeline.db import repository as repo
from pipeline.errors import ErrorCategory, TransientError

BUDGET_EXCEEDED = "budget_exceeded"


def hold(session: Session, document_id: int, waiting: Waiting, owner: str | None) -> None:
    repo.release_for_retry(
        session, document_id, TransientError(ErrorCategory.PROVIDER_RATE_LIMITED, waiting.message)
    )


def wake_documents(
    sessions: sessionmaker[Session],
    document_ids: Iterable[int],
    enqueue: Callable[[int, str], None],
) -> list[int]:
    ids = sorted(set(document_ids))
    for document_id in ids:
        enqueue(document_id, "extract")
    return ids


def wake_reason(
    sessions: sessionmaker[Session], reason: str, enqueue: Callable[[int, str], None]
) -> list[int]:
    return []


def waiting_count(session: Session, reason: str) -> int:
    return 0
