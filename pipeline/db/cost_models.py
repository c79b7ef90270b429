"""Tables of cost control: the page cache, spending caps and their ledger, batch requests."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    Numeric,
    Text,
    UniqueConstraint,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB, UUID
from sqlalchemy.orm import Mapped, mapped_column

from pipeline.db.models import Base

PERIODS = ("day", "month")
BATCH_REQUEST_STATES = ("queued", "submitting", "submitted", "succeeded", "failed")


class PageCacheEntry(Base):
    """A validated answer for a chunk of pages, keyed by what determines it: the pages' image
    and text, the schema and its version, the prompt version and the model plan."""

    __tablename__ = "page_cache"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    schema_name: Mapped[str] = mapped_column(Text)
    schema_version: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)  # the model plan, e.g. "haiku>sonnet" for a cascade
    provider: Mapped[str] = mapped_column(Text)
    data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # True when `data` is a whole document's checked answer (rules, grounding, re-checks and
    # escalation done): a hit then needs no further model call at all.
    final: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    source_call_id: Mapped[uuid.UUID] = mapped_column(UUID(as_uuid=True))
    source_document_id: Mapped[int | None] = mapped_column(
        ForeignKey("documents.id", ondelete="SET NULL")
    )
    cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))  # what the answer cost
    hits: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    last_hit_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class BudgetCap(Base):
    """A spending cap per day or per month, for all documents or one bucket prefix (a tenant).
    Edited at run time (`pagemill budget set`); workers read it before every call."""

    __tablename__ = "budget_caps"
    __table_args__ = (
        UniqueConstraint("period", "prefix", name="uq_budget_caps_period_prefix"),
        CheckConstraint(f"period IN ({', '.join(repr(p) for p in PERIODS)})", name="ck_cap_period"),
        CheckConstraint("limit_usd >= 0", name="ck_cap_limit"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(Text)
    # "" caps every document; "s3://bucket/prefix" (or "bucket/prefix") caps that tenant.
    prefix: Mapped[str] = mapped_column(Text, server_default="")
    limit_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BudgetLedger(Base):
    """Money committed per cap scope and period: every call's estimate when it starts, corrected
    to its actual cost when its outcome is written (a trigger on vlm_calls). A call that would
    take a ledger over its cap is not made."""

    __tablename__ = "budget_ledger"
    __table_args__ = (
        UniqueConstraint("period", "period_start", "prefix", name="uq_budget_ledger_scope"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    period: Mapped[str] = mapped_column(Text)
    period_start: Mapped[date] = mapped_column(Date)
    prefix: Mapped[str] = mapped_column(Text, server_default="")
    spent_usd: Mapped[Decimal] = mapped_column(Numeric(18, 8), server_default="0")
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class BatchRequest(Base):
    """One model call of a non-urgent document, answered through the provider's batch API.

    `call_key` names the call within its document's extraction (chunk, purpose, ordinal), so a
    document that resumes finds the answer to the call it is about to make."""

    __tablename__ = "batch_requests"
    __table_args__ = (
        UniqueConstraint("document_id", "call_key", name="uq_batch_requests_call"),
        CheckConstraint(
            f"status IN ({', '.join(repr(s) for s in BATCH_REQUEST_STATES)})",
            name="ck_batch_requests_status",
        ),
        Index("ix_batch_requests_status", "status", "provider", "model"),
        Index("ix_batch_requests_batch", "batch_id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    document_id: Mapped[int] = mapped_column(ForeignKey("documents.id", ondelete="CASCADE"))
    call_key: Mapped[str] = mapped_column(Text)
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    purpose: Mapped[str] = mapped_column(Text)
    page_indexes: Mapped[list[int]] = mapped_column(ARRAY(Integer), server_default="{}")
    # The request body, kept until an answer is final (then cleared: page images are large).
    params: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(Text, server_default="queued")
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"))
    call_id: Mapped[uuid.UUID | None] = mapped_column(UUID(as_uuid=True))  # current submission
    batch_id: Mapped[str | None] = mapped_column(Text)
    estimated_input_tokens: Mapped[int | None] = mapped_column(Integer)
    estimated_cost_usd: Mapped[Decimal | None] = mapped_column(Numeric(18, 8))
    # The parsed answer: {"data", "usage", "request_id", "stop_reason", "truncated", "problem"}.
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error_category: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())


class MessageBatch(Base):
    """A group of batch requests submitted together, as the provider knows it."""

    __tablename__ = "message_batches"

    id: Mapped[str] = mapped_column(Text, primary_key=True)  # the provider's batch id
    provider: Mapped[str] = mapped_column(Text)
    model: Mapped[str] = mapped_column(Text)
    status: Mapped[str] = mapped_column(Text)  # in_progress | canceling | ended | collected
    request_count: Mapped[int] = mapped_column(Integer)
    request_ids: Mapped[list[int]] = mapped_column(ARRAY(BigInteger), server_default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    ended_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    polled_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
