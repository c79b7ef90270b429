"""Content-addressed page cache: an identical page (a re-upload, the same attachment in another
document) reuses the stored answer instead of paying for it again.

The key is a hash of what determines the answer: each page's image and text layer, the schema's
name, version and instructions, the prompt version and the model plan (the cascade's models, in
order). Answers are stored per chunk of pages (one call's worth; a one-page document is one
chunk); a single-chunk document's checked final answer replaces its chunk's entry, so a
re-upload needs no re-check either.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session

from pipeline.db.cost_models import PageCacheEntry
from pipeline.domain import PageContent
from pipeline.schemas import SchemaSpec

# Bump when the extractors' prompts change in a way that changes answers: old entries then no
# longer match.
PROMPT_VERSION = "2026-12-04"


def chunk_key(pages: Sequence[PageContent], schema: SchemaSpec, plan: str, prompt: str) -> str:
    parts: list[Any] = [
        "pagemill-page-cache/1",
        schema.name,
        schema.version,
        hashlib.sha256(schema.instructions.encode()).hexdigest(),
        prompt,
        plan,
    ]
    for page in pages:
        parts.append(page.image_sha256)
        parts.append(hashlib.sha256(page.text.encode()).hexdigest())
    return hashlib.sha256(json.dumps(parts).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class Hit:
    key: str
    data: dict[str, Any]
    final: bool
    source_call_id: uuid.UUID
    source_document_id: int | None
    cost_usd: Decimal | None
    provider: str
    model: str


def lookup(session: Session, key: str) -> Hit | None:
    row = session.execute(
        select(PageCacheEntry).where(PageCacheEntry.key == key)
    ).scalar_one_or_none()
    if row is None:
        return None
    return Hit(
        key=key,
        data=row.data,
        final=row.final,
        source_call_id=row.source_call_id,
        source_document_id=row.source_document_id,
        cost_usd=row.cost_usd,
        provider=row.provider,
        model=row.model,
    )


def count_hit(session: Session, key: str) -> None:
    session.execute(
        update(PageCacheEntry)
        .where(PageCacheEntry.key == key)
        .values(hits=PageCacheEntry.hits + 1, last_hit_at=func.now())
    )


def store(
    session: Session,
    *,
    key: str,
    schema: SchemaSpec,
    provider: str,
    plan: str,
    data: dict[str, Any],
    final: bool,
    source_call_id: uuid.UUID,
    document_id: int | None,
    cost_usd: Decimal | None,
) -> None:
    """Keep an answer; a final (checked) answer replaces a chunk's, never the other way round."""
    stmt = insert(PageCacheEntry).values(
        key=key,
        schema_name=schema.name,
        schema_version=schema.version,
        provider=provider,
        model=plan,
        data=data,
        final=final,
        source_call_id=source_call_id,
        source_document_id=document_id,
        cost_usd=cost_usd,
    )
    session.execute(
        stmt.on_conflict_do_update(
            index_elements=["key"],
            set_={
                name: stmt.excluded[name]
                for name in ("data", "final", "source_call_id", "source_document_id", "cost_usd")
            },
            where=PageCacheEntry.final.is_(False) | stmt.excluded.final.is_(True),
        )
    )
