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
    """Re-enqueue documents whose message was lost: pending too long, or a lease that expired
    (the worker holding it died). An expired lease is given back as pending, and `updated_at`
    is touched, so the next sweeps leave the document alone for `stuck_after`."""
    now = func.now()
    with transaction(sessions) as session:
        found = list(
            session.execute(
                select(Document.id, Document.stage)
                .where(
                    or_(
                        and_(
                            Document.status == DocumentStatus.PENDING.value,
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
        ids = [row.id for row in found]
        if ids:
            session.execute(
                update(Document)
                .where(Document.id.in_(ids))
                .values(
                    status=DocumentStatus.PENDING.value,
                    lease_until=None,
                    lease_owner=None,
                    updated_at=now,
                )
            )
    for row in found:
        enqueue(row.id, row.stage)
    if ids:
        log.info("sweep re-enqueued %d document(s)", len(ids))
    return ids


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
