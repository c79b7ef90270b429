"""Postgres schema as SQLAlchemy 2 typed models; unique constraints make every write idempotent."""

from __future__ import annotations

import uuid
from datetime import datetime
from decimal import Decimal
from typing import Any, ClassVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from pipeline.domain import CallOutcome, CallPurpose, DocumentStatus, PageStatus, Stage


def _values(enum: type[Any]) -> str:
    return ", ".join(f"'{member.value}'" for member in enum)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {dict[str, Any]: JSONB, list[Any]: JSONB}


class Document(Base):
    """One version of one object in a bucket, and where its processing stands."""

    __tablename__ = "documents"
    __table_args__ = (
        UniqueConstraint("bucket", "key", "version", name="uq_documents_object_version"),
        CheckConstraint(f"status IN ({_values(DocumentStatus)})", name="ck_documents_status"),
        Index("ix_documents_status_updated", "status", "updated_at"),
        Index(
            "ix_documents_waiting",
            "not_before",
            postgresql_where=text("status = 'pending' AND not_before IS NOT NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    bucket: Mapped[str] = mapped_column(Text)
    key: Mapped[str] = mapped_column(Text)
    # Version id when the bucket is versioned, else the ETag: an overwrite is a new document.
    version: Mapped[str] = mapped_column(Text, server_default="")
    size: Mapped[int | None] = mapped_column(BigInteger)
    sha256: Mapped[str | None] = mapped_column(Text)
    content_type: Mapped[str | None] = mapped_column(Text)
    schema_name: Mapped[str] = mapped_column(Text)
    provider: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=DocumentStatus.PENDING.value)
    # Which task runs next: "prepare" (CPU: download, split, render, OCR) or "extract" (I/O:
    # model calls). Each stage claims the document for itself, so a stray message of the other
    # stage is a no-op.
    stage: Mapped[str] = mapped_column(Text, server_default=Stage.PREPARE.value)
    # "batch": not urgent, its model calls go through the provider's batch API at a discount;
    # "urgent": never (whatever PAGEMILL_BATCH_ROUTES says); "standard": as the routes say.
    priority: Mapped[str] = mapped_column(Text, server_default="standard")
    page_count: Mapped[int | None] = mapped_column(Integer)
    repaired: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    error_category: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    # A worker holds a document until this time; past it, the sweep hands the work to another.
    lease_until: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str | None] = mapped_column(Text)
    # Waiting (see pipeline/usecases/waiting.py): a pending document does not run before
    # `not_before`; `wait_reason` says what it waits for (an error category such as
    # provider_unavailable, or budget_exceeded); `waiting_since` is when the current run of
    # waits began; `retries` counts the failures that use up the retry budget (outages do not).
    not_before: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    wait_reason: Mapped[str | None] = mapped_column(Text)
    waiting_since: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    retries: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class Page(Base):
    __tablename__ = "pages"
    __table_args__ = (
        UniqueConstraint("document_id", "page_index", name="uq_pages_document_index"),
        CheckConstraint(f"status IN ({_values(PageStatus)})", name="ck_pages_status"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    page_index: Mapped[int] = mapped_column(Integer)
    render_dpi: Mapped[float] = mapped_column(Float)
    pixel_width: Mapped[int] = mapped_column(Integer)
    pixel_height: Mapped[int] = mapped_column(Integer)
    has_text_layer: Mapped[bool] = mapped_column(Boolean)
    image_passthrough: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    image_sha256: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text, server_default=PageStatus.RENDERED.value)
    error_category: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class PagePayload(Base):
    """What the extract stage needs of a page, so image bytes never travel through the broker."""

    __tablename__ = "page_payloads"

    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    page_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    media_type: Mapped[str] = mapped_column(Text)
    image: Mapped[bytes] = mapped_column(LargeBinary)
    page_text: Mapped[str] = mapped_column(Text, server_default="")
    # [[text, x0, y0, x1, y1, block, line], ...] from the text layer or OCR, for grounding.
    words: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    width_pt: Mapped[float] = mapped_column(Float)
    height_pt: Mapped[float] = mapped_column(Float)


class ChunkResult(Base):
    """A checkpoint: the validated answer for pages [first_page, stop_page) of a document that
    takes more than one model call, so that a retry resumes instead of paying again. Deleted
    when the document is finished."""

    __tablename__ = "chunk_results"

    document_id: Mapped[int] = mapped_column(
        ForeignKey("documents.id", ondelete="CASCADE"), primary_key=True
    )
    first_page: Mapped[int] = mapped_column(Integer, primary_key=True)
    stop_page: Mapped[int] = mapped_column(Integer, primary_key=True)
    schema_name: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class Extraction(Base):
    """The document's result for one schema; invalid output is kept with its errors, flagged."""

    __tablename__ = "extractions"
    __table_args__ = (
        UniqueConstraint("document_id", "schema_name", name="uq_extractions_document_schema"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    schema_name: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    valid: Mapped[bool] = mapped_column(Boolean)
    data: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    errors: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    # Per field: where on which page the value was found, or "ungrounded".
    grounding: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    # Business-rule failures and ungrounded fields: why the result needs a human look.
    review_reasons: Mapped[list[Any]] = mapped_column(JSONB, server_default=text("'[]'::jsonb"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class VlmCall(Base):
    """One provider call attempt, paid or failed: the ground truth for cost."""

    __tablename__ = "vlm_calls"
    __table_args__ = (
        CheckConstraint(f"outcome IN ({_values(CallOutcome)})", name="ck_vlm_calls_outcome"),
        CheckConstraint(f"purpose IN ({_values(CallPurpose)})", name="ck_vlm_calls_purpose"),
        Index("ix_vlm_calls_document", "document_id"),
        Index("ix_vlm_calls_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    # Made before the call is sent, so that a retried write of the same row is a no-op.
    call_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True), unique=True)
    document_id: Mapped[int | None] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    page_indexes: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    output_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cache_creation_input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    cache_read_input_tokens: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    service_tier: Mapped[str | None] = mapped_column(Text)
    # NULL means "no price known for this model", never "free".
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))
    latency_ms: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[str] = mapped_column(Text)
    stop_reason: Mapped[str | None] = mapped_column(Text)
    error_category: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    # Cost control (pipeline/cost): why the call was made, what it was expected to cost, and
    # what each saving kept off the bill.
    purpose: Mapped[str] = mapped_column(Text, server_default=CallPurpose.EXTRACT.value)
    estimated_input_tokens: Mapped[int | None] = mapped_column(Integer)
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))
    cached_from_call_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))
    prompt_cache_marked: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    saved_page_cache_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), server_default="0")
    saved_cascade_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), server_default="0")
    saved_batch_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), server_default="0")
    saved_prompt_cache_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), server_default="0")
    budget_ledger_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")


class DeadLetter(Base):
    """A document that failed for good; replaying it records the history here."""

    __tablename__ = "dead_letters"
    __table_args__ = (
        # At most one open dead letter per document; a replayed one stays for the history.
        Index(
            "uq_dead_letters_open_document",
            "document_id",
            unique=True,
            postgresql_where=text("replayed_at IS NULL"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    task_name: Mapped[str] = mapped_column(Text)
    error_category: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str] = mapped_column(Text)
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    replayed_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    replay_count: Mapped[int] = mapped_column(Integer, server_default=text("0"))


class DocumentEvent(Base):
    """One state change of a document, written by a trigger on `documents` in the same
    transaction as the change (migration 0006), so no code path can forget it."""

    __tablename__ = "document_events"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    stage: Mapped[str] = mapped_column(Text)  # where the document is after the change
    from_stage: Mapped[str | None] = mapped_column(Text)
    from_status: Mapped[str | None] = mapped_column(Text)  # NULL: the document was registered
    to_status: Mapped[str] = mapped_column(Text)
    attempt: Mapped[int] = mapped_column(Integer)
    # The lease owner (task id) that made the change, or the named actor (reviewer, replay).
    worker: Mapped[str | None] = mapped_column(Text)
    error_category: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Seconds the document spent in from_status (since its previous event).
    duration_s: Mapped[float | None] = mapped_column(Float)
    created_at: Mapped[datetime] = mapped_column(
        DateTime(timezone=True), server_default=text("clock_timestamp()")
    )


class ReviewCorrection(Base):
    """A reviewer's verdict on one value: accepted as extracted, or corrected. The original
    value stays here beside the correction, with who and when."""

    __tablename__ = "review_corrections"
    __table_args__ = (
        CheckConstraint("action IN ('accepted', 'corrected')", name="ck_review_corrections_action"),
        Index("ix_review_corrections_document", "document_id", "id"),
        Index("ix_review_corrections_created", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    schema_name: Mapped[str] = mapped_column(Text)
    field: Mapped[str] = mapped_column(Text)
    action: Mapped[str] = mapped_column(Text)
    original: Mapped[Any | None] = mapped_column(JSONB)
    corrected: Mapped[Any | None] = mapped_column(JSONB)
    reason: Mapped[str | None] = mapped_column(Text)  # the review reason this answers, if any
    reviewer: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


# Cost-control tables (page cache, spending caps, batches) live in their own module.
from pipeline.db import cost_models  # noqa: E402, F401
