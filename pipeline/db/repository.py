"""Repository: every write is an idempotent statement (INSERT … ON CONFLICT, guarded UPDATE)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any, cast

from sqlalchemy import (
    Interval,
    Select,
    Table,
    Update,
    and_,
    bindparam,
    delete,
    func,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.dml import ReturningInsert, ReturningUpdate

from pipeline import metrics
from pipeline.db.models import (
    ChunkResult,
    DeadLetter,
    Document,
    Extraction,
    Page,
    PagePayload,
    VlmCall,
)
from pipeline.domain import (
    CallOutcome,
    CallRecord,
    DocumentStatus,
    ExtractionResult,
    ObjectRef,
    PageContent,
    PageStatus,
    Stage,
    Word,
)
from pipeline.errors import PipelineError
from pipeline.grounding import PageWords


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
        insert(_DOCUMENTS)
        .on_conflict_do_nothing(constraint="uq_documents_object_version")
        .returning(_DOCUMENTS.c.id)
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

# The tables behind the models: hot-path statements run as Core, without the ORM's bookkeeping,
# and are built once with bound parameters (building and cache-keying a statement per call cost
# more CPU than running it).
_DOCUMENTS = cast(Table, Document.__table__)
_PAGES = cast(Table, Page.__table__)
_PAYLOADS = cast(Table, PagePayload.__table__)
_CALLS = cast(Table, VlmCall.__table__)
_EXTRACTIONS = cast(Table, Extraction.__table__)
_CHUNKS = cast(Table, ChunkResult.__table__)


@functools.cache
def _claim_statement() -> Update:
    docs = _DOCUMENTS.c
    now = func.now()
    stored = (
        select(_EXTRACTIONS.c.id)
        .where(
            _EXTRACTIONS.c.document_id == docs.id,
            _EXTRACTIONS.c.schema_name == docs.schema_name,
            _EXTRACTIONS.c.valid.is_(True),
        )
        .correlate(_DOCUMENTS)
        .exists()
    )
    checkpointed = (
        select(_CHUNKS.c.document_id)
        .where(_CHUNKS.c.document_id == docs.id)
        .correlate(_DOCUMENTS)
        .exists()
    )
    return (
        update(_DOCUMENTS)
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
        update(_DOCUMENTS)
        .where(_DOCUMENTS.c.id == bindparam("p_document_id"))
        .values(
            size=bindparam("p_size"),
            sha256=bindparam("p_sha256"),
            content_type=bindparam("p_content_type"),
            page_count=bindparam("p_page_count"),
            repaired=bindparam("p_repaired"),
            updated_at=func.now(),
        )
    )


def record_pages(
    session: Session,
    document_id: int,
    pages: Sequence[PageContent],
    status: PageStatus = PageStatus.RENDERED,
) -> None:
    if not pages:
        return
    rows = [
        {
            "document_id": document_id,
            "page_index": p.index,
            "render_dpi": p.render_dpi,
            "pixel_width": p.pixel_width,
            "pixel_height": p.pixel_height,
            "has_text_layer": p.has_text_layer,
            "image_passthrough": p.image_passthrough,
            "image_sha256": p.image_sha256,
            "status": status.value,
        }
        for p in pages
    ]
    # Core executemany (one round trip via insertmanyvalues): the ORM bulk path adds nothing
    # here but CPU.
    session.execute(_record_pages_statement(), rows)


@functools.cache
def _record_pages_statement() -> Insert:
    stmt = insert(_PAGES)
    rendered = (
        "render_dpi",
        "pixel_width",
        "pixel_height",
        "has_text_layer",
        "image_passthrough",
        "image_sha256",
    )
    return stmt.on_conflict_do_update(
        constraint="uq_pages_document_index",
        set_={**{name: stmt.excluded[name] for name in rendered}, "updated_at": func.now()},
        # Never move a page backwards from extracted.
        where=_PAGES.c.status != PageStatus.EXTRACTED.value,
    )


def record_calls(session: Session, document_id: int | None, calls: Sequence[CallRecord]) -> None:
    """One vlm_calls row per call, in one statement. A call's row is written `started` before
    its request and once more with the outcome; writing a finished call again is a no-op."""
    if not calls:
        return
    rows = [
        {
            "call_id": call.call_id,
            "document_id": document_id,
            "provider": call.provider,
            "model": call.model,
            "request_id": call.request_id,
            "attempt": call.attempt,
            "page_indexes": call.page_indexes,
            "input_tokens": call.usage.input_tokens,
            "output_tokens": call.usage.output_tokens,
            "cache_creation_input_tokens": call.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": call.usage.cache_read_input_tokens,
            "service_tier": call.usage.service_tier,
            "cost_usd": call.cost_usd,
            "latency_ms": call.latency_ms,
            "outcome": call.outcome.value,
            "stop_reason": call.stop_reason,
            "error_category": call.error_category,
            "error_message": call.error_message,
            "purpose": call.purpose.value,
            "estimated_input_tokens": call.estimated_input_tokens,
            "estimated_cost_usd": call.estimated_cost_usd,
            "cached_from_call_id": call.cached_from_call_id,
            "prompt_cache_marked": call.prompt_cache_marked,
            "saved_page_cache_usd": call.savings.page_cache,
            "saved_cascade_usd": call.savings.cascade,
            "saved_batch_usd": call.savings.batch,
            "saved_prompt_cache_usd": call.savings.prompt_cache,
            "budget_ledger_ids": call.budget_ledger_ids,
        }
        for call in calls
    ]
    written = set(session.execute(_record_calls_statement(), rows).scalars())
    metrics.after_commit(
        session, metrics.calls_recorded, [c for c in calls if c.call_id in written]
    )


@functools.cache
def _record_calls_statement() -> ReturningInsert[tuple[uuid.UUID]]:
    stmt = insert(_CALLS)
    outcome = {
        name: stmt.excluded[name]
        for name in (
            "request_id",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "service_tier",
            "cost_usd",
            "latency_ms",
            "outcome",
            "stop_reason",
            "error_category",
            "error_message",
            "saved_page_cache_usd",
            "saved_cascade_usd",
            "saved_batch_usd",
            "saved_prompt_cache_usd",
        )
    }
    # A `started` row (written before the request) takes the outcome; a finished one is final.
    # RETURNING names the rows written (a finished call written again is not), for metrics.
    return stmt.on_conflict_do_update(
        index_elements=["call_id"],
        set_=outcome,
        where=_CALLS.c.outcome == CallOutcome.STARTED.value,
    ).returning(_CALLS.c.call_id)


def valid_extraction(session: Session, document_id: int, schema_name: str) -> Extraction | None:
    return session.execute(
        select(Extraction).where(
            Extraction.document_id == document_id,
            Extraction.schema_name == schema_name,
            Extraction.valid.is_(True),
        )
    ).scalar_one_or_none()


def save_extraction(session: Session, document_id: int, result: ExtractionResult) -> bool:
    """Store the result; a valid result already stored is never overwritten. True if written."""
    row = session.execute(
        _save_extraction_statement(),
        {
            "document_id": document_id,
            "schema_name": result.schema_name,
            "schema_version": result.schema_version,
            "provider": result.provider,
            "model": result.model,
            "valid": result.valid,
            "data": result.data if result.valid else None,
            "errors": result.errors,
            "grounding": result.grounding,
            "review_reasons": result.review_reasons,
        },
    ).scalar_one_or_none()
    return row is not None


@functools.cache
def _save_extraction_statement() -> ReturningInsert[tuple[int]]:
    stmt = insert(_EXTRACTIONS)
    return stmt.on_conflict_do_update(
        constraint="uq_extractions_document_schema",
        set_={
            "schema_version": stmt.excluded.schema_version,
            "provider": stmt.excluded.provider,
            "model": stmt.excluded.model,
            "valid": stmt.excluded.valid,
            "data": stmt.excluded.data,
            "errors": stmt.excluded.errors,
            "grounding": stmt.excluded.grounding,
            "review_reasons": stmt.excluded.review_reasons,
            "updated_at": func.now(),
        },
        where=_EXTRACTIONS.c.valid.is_(False),
    ).returning(_EXTRACTIONS.c.id)


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
    docs = _DOCUMENTS.c
    stmt = (
        update(_DOCUMENTS)
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
        delete(_CHUNKS)
        .where(_CHUNKS.c.document_id == bindparam("p_document_id"))
        .cte("dropped_checkpoints")
    )
    if with_pages:
        stmt = stmt.add_cte(
            update(_PAGES)
            .where(_PAGES.c.document_id == bindparam("p_document_id"))
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
    docs = _DOCUMENTS.c
    return (
        update(_DOCUMENTS)
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


def store_payloads(session: Session, document_id: int, pages: Sequence[PageContent]) -> None:
    if not pages:
        return
    rows = [
        {
            "document_id": document_id,
            "page_index": p.index,
            "media_type": p.media_type,
            "image": p.image,
            "page_text": p.text,
            "words": [[w.text, w.x0, w.y0, w.x1, w.y1, w.block, w.line] for w in p.words],
            "width_pt": p.width_pt,
            "height_pt": p.height_pt,
        }
        for p in pages
    ]
    session.execute(_store_payloads_statement(), rows)


@functools.cache
def _store_payloads_statement() -> Insert:
    stmt = insert(_PAYLOADS)
    return stmt.on_conflict_do_update(
        index_elements=["document_id", "page_index"],
        set_={name: stmt.excluded[name] for name in ("media_type", "image", "page_text", "words")},
    )


def _words(raw: list[Any]) -> list[Word]:
    return [Word(str(w[0]), w[1], w[2], w[3], w[4], int(w[5]), int(w[6])) for w in raw]


def load_pages(session: Session, document_id: int, start: int, stop: int) -> list[PageContent]:
    """Pages [start, stop) as the prepare stage stored them, images included (what a model call
    sends); grounding reads words only, through `iter_page_words`."""
    query = _load_pages_statement()
    params = {"document_id": document_id, "start": start, "stop": stop}
    return [
        PageContent(
            index=row.page_index,
            width_pt=row.width_pt,
            height_pt=row.height_pt,
            image=row.image,
            media_type=row.media_type,
            pixel_width=row.pixel_width,
            pixel_height=row.pixel_height,
            render_dpi=row.render_dpi,
            image_sha256=row.image_sha256,
            text=row.page_text,
            words=_words(row.words),
            image_passthrough=row.image_passthrough,
        )
        for row in session.execute(query, params)
    ]


@functools.cache
def _load_pages_statement() -> Select[Any]:
    pages, payloads = _PAGES.c, _PAYLOADS.c
    return (
        select(
            pages.page_index,
            payloads.width_pt,
            payloads.height_pt,
            payloads.image,
            payloads.media_type,
            pages.pixel_width,
            pages.pixel_height,
            pages.render_dpi,
            pages.image_sha256,
            payloads.page_text,
            payloads.words,
            pages.image_passthrough,
        )
        .join_from(
            _PAGES,
            _PAYLOADS,
            and_(
                payloads.document_id == pages.document_id,
                payloads.page_index == pages.page_index,
            ),
        )
        .where(
            pages.document_id == bindparam("document_id"),
            pages.page_index >= bindparam("start"),
            pages.page_index < bindparam("stop"),
        )
        .order_by(pages.page_index)
    )


def load_checkpoints(
    session: Session, document_id: int, schema_name: str, schema_version: str
) -> dict[tuple[int, int], dict[str, Any]]:
    """The validated chunk answers an earlier attempt saved, by page range [first, stop)."""
    chunks = _CHUNKS.c
    rows = session.execute(
        select(chunks.first_page, chunks.stop_page, chunks.data).where(
            chunks.document_id == document_id,
            chunks.schema_name == schema_name,
            chunks.schema_version == schema_version,
        )
    )
    return {(row.first_page, row.stop_page): row.data for row in rows}


def save_checkpoint(
    session: Session,
    document_id: int,
    first: int,
    stop: int,
    schema_name: str,
    schema_version: str,
    data: dict[str, Any],
) -> None:
    stmt = insert(_CHUNKS).values(
        document_id=document_id,
        first_page=first,
        stop_page=stop,
        schema_name=schema_name,
        schema_version=schema_version,
        data=data,
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["document_id", "first_page", "stop_page"],
            set_={
                "schema_name": stmt.excluded.schema_name,
                "schema_version": stmt.excluded.schema_version,
                "data": stmt.excluded.data,
            },
        )
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


@dataclass(frozen=True, slots=True)
class ResultRow:
    document_id: int
    bucket: str
    key: str
    status: str
    error_category: str | None
    error_message: str | None
    data: dict[str, Any] | None
    cost_usd: Decimal
    calls: int
    unpriced_calls: int
    created_at: datetime
    finished_at: datetime | None


def list_results(
    session: Session, *, limit: int = 100, status: str | None = None, bucket: str | None = None
) -> list[ResultRow]:
    query = text(
        """
        SELECT d.id, d.bucket, d.key, d.status, d.error_category, d.error_message, e.data,
               c.cost_usd, c.calls, c.unpriced_calls, d.created_at, d.finished_at
          FROM documents d
          LEFT JOIN extractions e
                 ON e.document_id = d.id AND e.schema_name = d.schema_name AND e.valid
          JOIN document_costs c ON c.document_id = d.id
         WHERE (CAST(:status AS text) IS NULL OR d.status = :status)
           AND (CAST(:bucket AS text) IS NULL OR d.bucket = :bucket)
         ORDER BY d.id DESC
         LIMIT :limit
        """
    )
    rows = session.execute(query, {"status": status, "bucket": bucket, "limit": limit})
    return [ResultRow(*row) for row in rows]


def iter_page_words(
    sessions: sessionmaker[Session], document_id: int, start: int, stop: int, chunk: int
) -> Iterator[list[PageWords]]:
    """Pages [start, stop), `chunk` at a time, as index and words only (what grounding reads).
    Each chunk is read in its own session, closed before the chunk is yielded: a suspended
    consumer holds no transaction, and only one chunk's words are in memory."""
    query = _page_words_statement()
    for first in range(start, stop, max(chunk, 1)):
        params = {"document_id": document_id, "start": first, "stop": min(first + chunk, stop)}
        with sessions() as session:
            rows = session.execute(query, params).all()
        yield [PageWords(row.page_index, _words(row.words)) for row in rows]


@functools.cache
def _page_words_statement() -> Select[Any]:
    payloads = _PAYLOADS.c
    return (
        select(payloads.page_index, payloads.words)
        .where(
            payloads.document_id == bindparam("document_id"),
            payloads.page_index >= bindparam("start"),
            payloads.page_index < bindparam("stop"),
        )
        .order_by(payloads.page_index)
    )
