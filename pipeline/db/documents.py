"""A document's life in the database: register, claim, advance, finish, release, dead-letter.

Every write is an idempotent statement (INSERT … ON CONFLICT, guarded UPDATE); the hot-path
ones are built once (see pipeline/db/tables.py)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import Interval, Update, and_, bindparam, delete, func, or_, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from pipeline import metrics
from pipeline.db.models import DeadLetter, Document
from pipeline.db.tables import CHUNKS, DOCUMENTS, EXTRACTIONS, PAGES
from pipeline.domain import DocumentStatus, ObjectRef, PageStatus, Stage
from pipeline.errors import PipelineError


def register_document(
    session: Session,
    ref: ObjectRef,
    schema_name: str,
    provider: str | None = None,
    priority: str = "standard",
) -> tuple[int, bool]:
    """The document row for this object version; (id, created). A duplicate event creates none.
    `priority` "batch" sends its model calls through the provider's batch API (not urgent)."""
    params = {
        "bucket": ref.bucket,
        "key": ref.key,
        "version": ref.version,
        "size": ref.size,
        "schema_name": schema_name,
        "provider": provider,
        "priority": priority,
    }
    new_id = session.execute(_register_statement(), params).scalar_one_or_none()
    if new_id is not None:
        return new_id, True
    existing = session.execute(
        select(Document.id).where(
            Document.bucket == ref.bucket, Document.key == ref.key, Document.version == ref.version
        )
    ).scalar_one()
    return existing, False


@functools.cache
def _register_statement() -> ReturningInsert[Any]:
    return (
        insert(DOCUMENTS)
        .on_conflict_do_nothing(constraint="uq_documents_object_version")
        .returning(DOCUMENTS.c.id)
    )


@dataclass(frozen=True, slots=True)
class ClaimedDocument:
    """What a stage needs of the document it just claimed."""

    id: int
    bucket: str
    key: str
    version: str
    schema_name: str
    provider: str | None
    page_count: int | None
    attempts: int
    stored_result: bool  # a valid result for its schema is stored already
    checkpointed: bool  # an earlier attempt saved chunk answers (chunk_results)


# Worker and database clocks may disagree by a little: a delayed message for a waiting document
# may arrive this much before its `not_before` and still start it.
CLAIM_SLACK = timedelta(seconds=2)


@functools.cache
def _claim_statement() -> Update:
    docs = DOCUMENTS.c
    now = func.now()
    stored = (
        select(EXTRACTIONS.c.id)
        .where(
            EXTRACTIONS.c.document_id == docs.id,
            EXTRACTIONS.c.schema_name == docs.schema_name,
            EXTRACTIONS.c.valid.is_(True),
        )
        .correlate(DOCUMENTS)
        .exists()
    )
    checkpointed = (
        select(CHUNKS.c.document_id)
        .where(CHUNKS.c.document_id == docs.id)
        .correlate(DOCUMENTS)
        .exists()
    )
    return (
        update(DOCUMENTS)
        .where(
            docs.id == bindparam("p_document_id"),
            docs.stage == bindparam("p_stage"),
            # A waiting document (see pipeline/usecases/waiting.py) is not started by a message
            # that comes early: a stray redelivery must not cut its wait short.
            or_(docs.not_before.is_(None), docs.not_before <= now + CLAIM_SLACK),
            or_(
                docs.status == DocumentStatus.PENDING.value,
                and_(
                    docs.status == DocumentStatus.PROCESSING.value,
                    or_(
                        docs.lease_until.is_(None),
                        docs.lease_until < now,
                        # NULL owner compares as NULL: only a named task takes a lease back.
                        docs.lease_owner == bindparam("p_owner"),
                    ),
                ),
            ),
        )
        .values(
            status=DocumentStatus.PROCESSING.value,
            lease_until=now + bindparam("p_lease", type_=Interval),
            lease_owner=bindparam("p_owner"),
            attempts=docs.attempts + 1,
            not_before=None,
            wait_reason=None,
            updated_at=now,
        )
        .returning(
            docs.id,
            docs.bucket,
            docs.key,
            docs.version,
            docs.schema_name,
            docs.provider,
            docs.page_count,
            docs.attempts,
            stored,
            checkpointed,
        )
    )


def claim_document(
    session: Session, document_id: int, lease: timedelta, stage: Stage, owner: str | None = None
) -> ClaimedDocument | None:
    """Take the document for this stage; None when it is final, at another stage, or another
    worker holds it (a duplicate message). `owner` (the task id, the same across a task's
    retries and redeliveries) may take back its own lease after a failure it could not report.
    One statement: the claim also says whether a valid result is stored already."""
    row = session.execute(
        _claim_statement(),
        {"p_document_id": document_id, "p_stage": stage.value, "p_lease": lease, "p_owner": owner},
    ).one_or_none()
    return None if row is None else ClaimedDocument(*row)


@dataclass(frozen=True, slots=True)
class SourceFacts:
    """What the prepare stage learns of the file itself."""

    size: int
    sha256: str
    content_type: str
    page_count: int
    repaired: bool


def record_source(session: Session, document_id: int, facts: SourceFacts) -> None:
    session.execute(
        _record_source_statement(),
        {
            "p_document_id": document_id,
            "p_size": facts.size,
            "p_sha256": facts.sha256,
            "p_content_type": facts.content_type,
            "p_page_count": facts.page_count,
            "p_repaired": facts.repaired,
        },
    )


@functools.cache
def _record_source_statement() -> Update:
    return (
        update(DOCUMENTS)
        .where(DOCUMENTS.c.id == bindparam("p_document_id"))
        .values(
            size=bindparam("p_size"),
            sha256=bindparam("p_sha256"),
            content_type=bindparam("p_content_type"),
            page_count=bindparam("p_page_count"),
            repaired=bindparam("p_repaired"),
            updated_at=func.now(),
        )
    )


def finish_document(
    session: Session,
    document_id: int,
    status: DocumentStatus,
    error: PipelineError | None = None,
    *,
    pages: PageStatus | None = None,
) -> bool:
    """Move a processing document to a final state, and its pages to `pages` when given, in one
    statement; False if the document was not ours to finish."""
    params: dict[str, Any] = {
        "p_document_id": document_id,
        "p_status": status.value,
        "p_error_category": error.category.value if error else None,
        "p_error_message": error.message if error else None,
    }
    if pages is not None:
        params["p_page_status"] = pages.value
    row = session.execute(_finish_statement(pages is not None), params).one_or_none()
    if row is not None:
        metrics.after_commit(session, metrics.document_finished, status.value, *row[1:])
    return row is not None


@functools.cache
def _finish_statement(with_pages: bool) -> ReturningUpdate[tuple[int, str, int | None]]:
    docs = DOCUMENTS.c
    stmt = (
        update(DOCUMENTS)
        .where(
            docs.id == bindparam("p_document_id"),
            docs.status.in_([DocumentStatus.PROCESSING.value, DocumentStatus.PENDING.value]),
        )
        .values(
            status=bindparam("p_status"),
            error_category=bindparam("p_error_category"),
            error_message=bindparam("p_error_message"),
            lease_until=None,
            lease_owner=None,
            not_before=None,
            wait_reason=None,
            waiting_since=None,
            finished_at=func.now(),
            updated_at=func.now(),
        )
        .returning(docs.id, docs.schema_name, docs.page_count)
    )
    # Chunk checkpoints served their purpose: the result (or the failure) is final.
    stmt = stmt.add_cte(
        delete(CHUNKS)
        .where(CHUNKS.c.document_id == bindparam("p_document_id"))
        .cte("dropped_checkpoints")
    )
    if with_pages:
        stmt = stmt.add_cte(
            update(PAGES)
            .where(PAGES.c.document_id == bindparam("p_document_id"))
            .values(status=bindparam("p_page_status"), updated_at=func.now())
            .cte("marked_pages")
        )
    return stmt


def advance_stage(session: Session, document_id: int, stage: Stage) -> bool:
    """Hand the document to the next stage (pending again, no lease); True if it was ours."""
    row = session.execute(
        _advance_statement(), {"p_document_id": document_id, "p_stage": stage.value}
    ).scalar_one_or_none()
    return row is not None


@functools.cache
def _advance_statement() -> ReturningUpdate[tuple[int]]:
    docs = DOCUMENTS.c
    return (
        update(DOCUMENTS)
        .where(
            docs.id == bindparam("p_document_id"), docs.status == DocumentStatus.PROCESSING.value
        )
        .values(
            stage=bindparam("p_stage"),
            status=DocumentStatus.PENDING.value,
            lease_until=None,
            lease_owner=None,
            # Progress: the run of waits (if any) is over.
            not_before=None,
            wait_reason=None,
            waiting_since=None,
            updated_at=func.now(),
        )
        .returning(docs.id)
    )


def release_for_retry(session: Session, document_id: int, error: PipelineError) -> None:
    """Give the document back (pending) with the last error, so a retry or the sweep takes it."""
    session.execute(
        update(Document)
        .where(Document.id == document_id, Document.status == DocumentStatus.PROCESSING.value)
        .values(
            status=DocumentStatus.PENDING.value,
            error_category=error.category.value,
            error_message=error.message,
            lease_until=None,
            lease_owner=None,
            updated_at=func.now(),
        )
    )


def add_dead_letter(
    session: Session, document_id: int, task_name: str, error: PipelineError, attempts: int
) -> None:
    stmt = (
        insert(DeadLetter)
        .values(
            document_id=document_id,
            task_name=task_name,
            error_category=error.category.value,
            error_message=error.message,
            attempts=attempts,
        )
        .on_conflict_do_nothing(
            index_elements=["document_id"], index_where=text("replayed_at IS NULL")
        )
        .returning(DeadLetter.id)
    )
    if session.execute(stmt).scalar_one_or_none() is not None:  # None: one was open already
        metrics.after_commit(session, metrics.dead_lettered, error.category.value)
