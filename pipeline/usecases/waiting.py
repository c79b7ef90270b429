"""Waiting mechanism: a document that cannot make progress now waits in Postgres and resumes by
itself, without a broker countdown and, for outages, without using up its retries.

Why: a broker countdown longer than Redis's visibility timeout is delivered twice, a message
dies with the broker, and an outage of hours would spend any retry budget. Postgres is the
source of truth, so a wait is a row, and any process can see what waits and why.

The state, on `documents` (migration 0005):

* `status = 'pending'` with `not_before`: the document may not run before this time;
* `wait_reason`: what it waits for, an error category (`provider_unavailable`,
  `database_unavailable`, `storage_unavailable`, `broker_unavailable`,
  `provider_rate_limited`, ...) or another module's reason (`budget_exceeded`);
* `waiting_since`: when the current run of waits began; kept across consecutive waits and
  cleared when the document moves on (next stage or final). The backoff grows with it
  (`Backoff`) and `PAGEMILL_MAX_WAIT_S` bounds it;
* `retries`: the waits that count against `PAGEMILL_TASK_MAX_RETRIES`. Only failures of the
  document itself count (`counts=True`); an outage never does.

How a document waits and resumes:

1. `wait_document(session, id, reason=..., backoff=Backoff(...), counts=...)` gives the
   document back as pending with `not_before = now() + delay` (one statement; a processing
   document only when `owner` holds its lease; `Backoff.fixed(s)` for a wait of known
   length). The caller may also send a delayed message for a short wait; it is only a nudge.
2. A claim (`repository.claim_document`) refuses a document whose `not_before` is still ahead
   (a stray or early message does nothing) and clears `not_before` and `wait_reason`.
3. The beat's sweep calls `resume_due` every `PAGEMILL_SWEEP_INTERVAL_S`: every pending
   document whose `not_before` has passed is enqueued, and its `not_before` cleared once the
   message is out (a broker that is down leaves it due for the next sweep).
4. When a dependency comes back, `wake(session, reasons)` makes every document waiting for it
   due at once, instead of each finishing its own backoff.
5. `mark_due` records a nudge that could not be sent (the broker was down): the document is
   due now, and the next sweep sends it.

Other modules use it as is: the cost helper parks a document with `wait_document(session, id,
reason="budget_exceeded", backoff=Backoff.fixed(seconds), owner=task_id)`, and the ops views
count pending documents with a `wait_reason` as waiting in the backlog.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast

from sqlalchemy import (
    Float,
    Table,
    Update,
    bindparam,
    extract,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import ReturningUpdate

from pipeline.db.models import Document
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus

log = logging.getLogger(__name__)

_DOCUMENTS = cast(Table, Document.__table__)


@dataclass(frozen=True, slots=True)
class Backoff:
    """How long the next wait is: about as long as this run of waits has lasted so far (each
    wait roughly doubles the total: an exponential backoff without a counter), at least
    `base_s` and at most `cap_s`, with jitter (half to all of it) so that documents do not come
    back all at once; never shorter than `floor_s` (a server's retry-after)."""

    base_s: float
    cap_s: float
    floor_s: float = 0.0

    @classmethod
    def fixed(cls, seconds: float) -> Backoff:
        """Exactly `seconds` (for a wait whose end is known, such as a budget period)."""
        return cls(base_s=seconds, cap_s=seconds, floor_s=seconds)


@dataclass(frozen=True, slots=True)
class Waiting:
    """Where a document stands after `wait_document`."""

    not_before: datetime
    delay_s: float  # from now to not_before
    waited_s: float  # since `waiting_since`: how long this run of waits has lasted
    retries: int  # failures that count against the retry budget, this one included


def wait_document(
    session: Session,
    document_id: int,
    *,
    reason: str,
    backoff: Backoff,
    counts: bool = False,
    owner: str | None = None,
    error: tuple[str, str] | None = None,
) -> Waiting | None:
    """Give the document back as pending, not to run before the `backoff` says.

    A pending document waits; a processing one only if `owner` holds it (its running task).
    `counts` adds one to `retries` (a failure of the document itself; never for an outage).
    `error` (category, message) is recorded as the document's last error. None when the
    document was not ours to park (final, or another worker holds it)."""
    row = session.execute(
        _wait_statement(),
        {
            "p_document_id": document_id,
            "p_owner": owner,
            "p_reason": reason,
            "p_base": max(backoff.base_s, 0.0),
            "p_cap": max(backoff.cap_s, 0.0),
            "p_floor": max(backoff.floor_s, 0.0),
            "p_counts": 1 if counts else 0,
            "p_error_category": error[0] if error else None,
            "p_error_message": error[1] if error else None,
        },
    ).one_or_none()
    if row is None:
        return None
    return Waiting(
        not_before=row.not_before,
        delay_s=max(float(row.delay_s), 0.0),
        waited_s=float(row.waited_s),
        retries=row.retries,
    )


@functools.cache
def _wait_statement() -> ReturningUpdate[Any]:
    docs = _DOCUMENTS.c
    now = func.now()
    since = func.coalesce(docs.waiting_since, now)
    waited = extract("epoch", now - since)
    ceiling = func.least(
        bindparam("p_cap", type_=Float), func.greatest(bindparam("p_base", type_=Float), waited)
    )
    delay = func.greatest(bindparam("p_floor", type_=Float), ceiling * (0.5 + func.random() * 0.5))
    return (
        update(_DOCUMENTS)
        .where(
            docs.id == bindparam("p_document_id"),
            or_(
                docs.status == DocumentStatus.PENDING.value,
                (docs.status == DocumentStatus.PROCESSING.value)
                & (docs.lease_owner == bindparam("p_owner")),
            ),
        )
        .values(
            status=DocumentStatus.PENDING.value,
            not_before=now + func.make_interval(0, 0, 0, 0, 0, 0, delay),
            wait_reason=bindparam("p_reason"),
            waiting_since=since,
            retries=docs.retries + bindparam("p_counts"),
            error_category=func.coalesce(bindparam("p_error_category"), docs.error_category),
            error_message=func.coalesce(bindparam("p_error_message"), docs.error_message),
            lease_until=None,
            lease_owner=None,
            updated_at=now,
        )
        .returning(
            docs.not_before,
            extract("epoch", docs.not_before - now).cast(Float).label("delay_s"),
            extract("epoch", now - docs.waiting_since).cast(Float).label("waited_s"),
            docs.retries,
        )
    )


def mark_due(session: Session, document_id: int, reason: str) -> bool:
    """A pending document's nudge could not be sent: make it due now, so the sweep sends it.
    True when the document was pending."""
    row = session.execute(
        update(_DOCUMENTS)
        .where(
            _DOCUMENTS.c.id == document_id,
            _DOCUMENTS.c.status == DocumentStatus.PENDING.value,
        )
        .values(
            not_before=func.coalesce(_DOCUMENTS.c.not_before, func.now()),
            wait_reason=reason,
            waiting_since=func.coalesce(_DOCUMENTS.c.waiting_since, func.now()),
        )
        .returning(_DOCUMENTS.c.id)
    ).scalar_one_or_none()
    return row is not None


def wake(session: Session, reasons: Iterable[str]) -> int:
    """Documents waiting for one of `reasons` are due now (that dependency is back); how many."""
    names = sorted(set(reasons))
    if not names:
        return 0
    docs = _DOCUMENTS.c
    result = session.execute(
        update(_DOCUMENTS)
        .where(
            docs.status == DocumentStatus.PENDING.value,
            docs.not_before > func.now(),
            docs.wait_reason.in_(names),
        )
        .values(not_before=func.now())
    )
    return int(getattr(result, "rowcount", 0) or 0)


def resume_due(
    sessions: sessionmaker[Session],
    enqueue: Callable[[int, str], None],
    *,
    batch: int = 500,
) -> list[int]:
    """Enqueue every pending document whose `not_before` has passed, `batch` rows per
    transaction. A document's `not_before` is cleared only once its message is out, so a broker
    that is down leaves the rest due for the next run (the error propagates)."""
    resumed: list[int] = []
    while True:
        sent, complete = _resume_batch(sessions, enqueue, batch)
        resumed.extend(sent)
        if complete:
            break
    if resumed:
        log.info("resumed %d waiting document(s)", len(resumed))
    return resumed


def _resume_batch(
    sessions: sessionmaker[Session], enqueue: Callable[[int, str], None], batch: int
) -> tuple[list[int], bool]:
    docs = _DOCUMENTS.c
    sent: list[int] = []
    with transaction(sessions) as session:
        rows = list(
            session.execute(
                select(docs.id, docs.stage)
                .where(
                    docs.status == DocumentStatus.PENDING.value,
                    docs.not_before.is_not(None),
                    docs.not_before <= func.now(),
                )
                .order_by(docs.not_before)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        )
        try:
            for row in rows:
                enqueue(row.id, row.stage)
                sent.append(row.id)
        finally:
            # Whatever went out is no longer due, even when the broker failed half-way.
            if sent:
                session.execute(_resumed_statement(), [{"p_id": i} for i in sent])
    return sent, len(rows) < batch


@functools.cache
def _resumed_statement() -> Update:
    docs = _DOCUMENTS.c
    return (
        update(_DOCUMENTS)
        .where(docs.id == bindparam("p_id"), docs.status == DocumentStatus.PENDING.value)
        .values(not_before=None, updated_at=func.now())
    )
