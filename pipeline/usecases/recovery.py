"""Recovery: Postgres, not the broker, decides what still has to happen."""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, false, func, or_, select, update
from sqlalchemy.orm import Session, sessionmaker

from pipeline import storage
from pipeline.db import repository as repo
from pipeline.db.models import Document
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus

log = logging.getLogger(__name__)


def sweep(
    sessions: sessionmaker[Session],
    *,
    stuck_after: timedelta,
    enqueue: Callable[[int, str], None],
    batch: int = 500,
) -> list[int]:
    """Re-enqueue documents whose message was lost: pending too long (and not waiting, see
    pipeline/usecases/waiting.py), or a lease that expired (the worker holding it died). An
    expired lease is given back as pending, and `updated_at` is touched, so the next sweeps
    leave the document alone for `stuck_after`. A document is marked only once its message is
    out: a broker that is down leaves the rest for the next sweep (the error propagates)."""
    now = func.now()
    sent: list[int] = []
    with transaction(sessions) as session:
        found = list(
            session.execute(
                select(Document.id, Document.stage)
                .where(
                    or_(
                        and_(
                            Document.status == DocumentStatus.PENDING.value,
                            Document.not_before.is_(None),
                            Document.updated_at < now - stuck_after,
                        ),
                        and_(
                            Document.status == DocumentStatus.PROCESSING.value,
                            Document.lease_until < now,
                        ),
                    )
                )
                .order_by(Document.id)
                .limit(batch)
                .with_for_update(skip_locked=True)
            )
        )
        try:
            for row in found:
                enqueue(row.id, row.stage)
                sent.append(row.id)
        finally:
            if sent:
                session.execute(
                    update(Document)
                    .where(Document.id.in_(sent))
                    .values(
                        status=DocumentStatus.PENDING.value,
                        lease_until=None,
                        lease_owner=None,
                        updated_at=now,
                    )
                )
    if sent:
        log.info("sweep re-enqueued %d document(s)", len(sent))
    return sent


def requeue_pending(
    sessions: sessionmaker[Session], enqueue: Callable[[int, str], None], *, batch: int = 1000
) -> list[int]:
    """Enqueue every pending document that is not waiting, at once: for when the broker came back
    empty (a restart without persistence) and every queued message died with it. Documents
    whose messages survived get a second one, which their claim makes a no-op."""
    sent: list[int] = []
    after = 0
    while True:
        with sessions() as session:
            rows = list(
                session.execute(
                    select(Document.id, Document.stage)
                    .where(
                        Document.status == DocumentStatus.PENDING.value,
                        # Waiting documents are resume_due's (pipeline/usecases/waiting.py).
                        Document.not_before.is_(None),
                        Document.id > after,
                    )
                    .order_by(Document.id)
                    .limit(batch)
                )
            )
        for row in rows:
            enqueue(row.id, row.stage)
            sent.append(row.id)
        if len(rows) < batch:
            break
        after = rows[-1].id
    if sent:
        log.info("re-enqueued %d pending document(s) after the broker lost its messages", len(sent))
    return sent


def reconcile(
    sessions: sessionmaker[Session],
    s3: Any,
    bucket: str,
    *,
    prefix: str = "",
    schema_name: str,
    provider: str | None,
    enqueue: Callable[[int], None],
) -> list[int]:
    """Ingest objects for which no bucket event ever arrived.

    An object counts as known when a document has its ETag, or (versioned buckets, where events
    carry a version id the listing lacks) when a document for the key was created after the
    object's last modification.
    """
    created_ids: list[int] = []
    for ref in storage.list_objects(s3, bucket, prefix):
        modified = datetime.fromisoformat(ref.event_time) if ref.event_time else None
        with transaction(sessions) as session:
            known = session.execute(
                select(func.count())
                .select_from(Document)
                .where(
                    Document.bucket == ref.bucket,
                    Document.key == ref.key,
                    or_(
                        Document.version == ref.version,
                        Document.created_at >= modified if modified else false(),
                    ),
                )
            ).scalar_one()
            if known:
                continue
            document_id, created = repo.register_document(session, ref, schema_name, provider)
        if created:
            created_ids.append(document_id)
            enqueue(document_id)
    if created_ids:
        log.info("reconcile found %d object(s) without an event in %s", len(created_ids), bucket)
    return created_ids
