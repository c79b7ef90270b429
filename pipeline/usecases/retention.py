"""Retention: page images are kept while a document may still need them, then deleted.

`page_payloads` holds each page's JPEG, text and words: what the extract stage sends to the
model and what the review page shows. They are kept until the document is final plus
PAGEMILL_PAYLOAD_RETENTION_DAYS (30 by default, so a reviewer can still see the pages), then
deleted by the beat (`pagemill.retention`, every PAGEMILL_RETENTION_INTERVAL_S) or by
`pagemill retention`. Results, calls and costs are kept; a replayed dead letter renders its
pages again from the bucket.
"""

from __future__ import annotations

import logging
from datetime import timedelta

from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.session import transaction

log = logging.getLogger(__name__)

# Documents still holding payloads are few (the ones inside the retention window), so finding
# them from page_payloads' primary key stays cheap however many documents there are.
_EXPIRED = text(
    """
    WITH expired AS (
        SELECT d.id
          FROM (SELECT DISTINCT document_id FROM page_payloads) p
          JOIN documents d ON d.id = p.document_id
         WHERE d.status IN ('done', 'needs_review', 'failed')
           AND d.finished_at < now() - CAST(:keep AS interval)
         LIMIT :batch
    )
    DELETE FROM page_payloads USING expired WHERE page_payloads.document_id = expired.id
    RETURNING page_payloads.document_id
    """
)


def delete_expired_payloads(
    sessions: sessionmaker[Session], keep: timedelta, *, batch: int = 200
) -> int:
    """Delete the payloads of documents final for longer than `keep`, `batch` documents per
    transaction; the number of documents whose payloads went."""
    documents = 0
    while True:
        with transaction(sessions) as session:
            gone = _delete_batch(session, keep, batch)
        documents += gone
        if gone < batch:
            break
    if documents:
        log.info("deleted the page images of %d document(s) final for over %s", documents, keep)
    return documents


def _delete_batch(session: Session, keep: timedelta, batch: int) -> int:
    rows = session.execute(_EXPIRED, {"keep": keep, "batch": batch}).scalars().all()
    return len(set(rows))
