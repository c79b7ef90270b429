"""Chunk checkpoints: validated chunk answers an attempt saved, so a retry does not pay again."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.tables import CHUNKS


def load_checkpoints(
    session: Session, document_id: int, schema_name: str, schema_version: str
) -> dict[tuple[int, int], dict[str, Any]]:
    """The validated chunk answers an earlier attempt saved, by page range [first, stop)."""
    chunks = CHUNKS.c
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
    stmt = insert(CHUNKS).values(
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
