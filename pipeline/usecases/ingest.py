"""Ingest: a bucket object becomes a document row (once), then a nudge to process it."""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy.orm import Session, sessionmaker

from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef

log = logging.getLogger(__name__)


def ingest_object(
    sessions: sessionmaker[Session],
    ref: ObjectRef,
    *,
    schema_name: str,
    provider: str | None,
    enqueue: Callable[[int], None],
) -> tuple[int, bool]:
    """Register the object version and enqueue it; a duplicate event enqueues nothing.

    The row is committed before the message is sent: if the send is lost, the sweep finds
    the pending row. The reverse order could leave a message pointing at nothing.
    """
    with transaction(sessions) as session:
        document_id, created = repo.register_document(session, ref, schema_name, provider)
    if created:
        enqueue(document_id)
        log.info("ingested document %s (%s/%s)", document_id, ref.bucket, _safe_key(ref.key))
    else:
        log.info("duplicate event for document %s ignored", document_id)
    return document_id, created


def _safe_key(key: str) -> str:
    return key if len(key) <= 200 else key[:197] + "..."
