"""Extraction results: one per document and schema, stored, read back, listed with their cost."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from pipeline.db.models import Extraction
from pipeline.db.tables import EXTRACTIONS
from pipeline.domain import ExtractionResult


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
    stmt = insert(EXTRACTIONS)
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
        where=EXTRACTIONS.c.valid.is_(False),
    ).returning(EXTRACTIONS.c.id)


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
