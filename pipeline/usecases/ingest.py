"""Ingest: a bucket object becomes a document row (once), then a nudge to process it."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline import storage
from pipeline.cost.config import metadata_priority
from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.routing import Route, schema_for
from pipeline.usecases.process import fail_document

log = logging.getLogger(__name__)


def ingest_object(
    sessions: sessionmaker[Session],
    ref: ObjectRef,
    *,
    schema_name: str,
    provider: str | None,
    enqueue: Callable[[int], object],
    rejection: PermanentError | None = None,
    priority: str = "standard",
) -> tuple[int, bool]:
    """Register the object version and enqueue it; a duplicate event enqueues nothing.

    The row is committed before the message is sent: if the send is lost, the sweep finds
    the pending row. The reverse order could leave a message pointing at nothing. An object
    that can never be processed (`rejection`) is registered failed, with a dead letter.
    """
    with transaction(sessions) as session:
        document_id, created = repo.register_document(session, ref, schema_name, provider, priority)
    if not created:
        log.info("duplicate event for document %s ignored", document_id)
    elif rejection is not None:
        fail_document(sessions, document_id, rejection, task_name="ingest")
    else:
        enqueue(document_id)
        log.info("ingested document %s (%s)", document_id, ref.bucket)
    return document_id, created


def ingest_event_object(
    sessions: sessionmaker[Session],
    s3: Any,
    ref: ObjectRef,
    *,
    routes: Sequence[Route],
    default_schema: str,
    provider: str | None,
    read_metadata: bool,
    enqueue: Callable[[int], object],
) -> tuple[int, bool] | None:
    """Choose the schema (object metadata, then prefix routes, then the default) and ingest.
    None when the object is already gone (deleted before its event was read)."""
    metadata: dict[str, str] | None = None
    if read_metadata:
        try:
            _, metadata = storage.head_object_metadata(s3, ref)
        except PermanentError as exc:
            if exc.category is ErrorCategory.NOT_FOUND:
                log.info("object of an event is gone; skipped (%s)", ref.bucket)
                return None
            raise
    rejection: PermanentError | None = None
    try:
        schema_name = schema_for(ref, routes, metadata, default_schema)
    except PermanentError as exc:
        schema_name, rejection = default_schema, exc
    # x-amz-meta-pagemill-priority: batch marks an upload not urgent (key prefixes can too:
    # PAGEMILL_BATCH_ROUTES, applied when the document is extracted).
    priority = metadata_priority(metadata) or "standard"
    return ingest_object(
        sessions,
        ref,
        schema_name=schema_name,
        provider=provider,
        enqueue=enqueue,
        rejection=rejection,
        priority=priority,
    )
