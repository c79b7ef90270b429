"""Dead letters: list, inspect, replay (idempotent, with history) and purge."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, select, update
from sqlalchemy.orm import Session

from pipeline.db.models import DeadLetter, Document, VlmCall
from pipeline.domain import DocumentStatus, Stage


@dataclass(frozen=True, slots=True)
class LetterView:
    id: int
    document_id: int
    bucket: str
    key: str
    category: str
    message: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None
    replay_count: int


def _view(letter: DeadLetter, doc: Document) -> LetterView:
    return LetterView(
        id=letter.id,
        document_id=letter.document_id,
        bucket=doc.bucket,
        key=doc.key,
        category=letter.error_category,
        message=letter.error_message,
        attempts=letter.attempts,
        created_at=letter.created_at,
        replayed_at=letter.replayed_at,
        replay_count=letter.replay_count,
    )


def list_letters(
    session: Session, *, category: str | None = None, include_replayed: bool = False
) -> list[LetterView]:
    query = select(DeadLetter, Document).join(Document, Document.id == DeadLetter.document_id)
    if category:
        query = query.where(DeadLetter.error_category == category)
    if not include_replayed:
        query = query.where(DeadLetter.replayed_at.is_(None))
    return [_view(letter, doc) for letter, doc in session.execute(query.order_by(DeadLetter.id))]


def show_letter(session: Session, letter_id: int) -> dict[str, Any] | None:
    """The letter, its document, every dead letter the document had, and its provider calls."""
    row = session.execute(
        select(DeadLetter, Document)
        .join(Document, Document.id == DeadLetter.document_id)
        .where(DeadLetter.id == letter_id)
    ).one_or_none()
    if row is None:
        return None
    letter, doc = row
    history = session.execute(
        select(DeadLetter).where(DeadLetter.document_id == doc.id).order_by(DeadLetter.id)
    ).scalars()
    calls = session.execute(
        select(VlmCall).where(VlmCall.document_id == doc.id).order_by(VlmCall.id)
    ).scalars()
    return {
        "letter": asdict(_view(letter, doc)),
        "document": {
            "id": doc.id,
            "bucket": doc.bucket,
            "key": doc.key,
            "version": doc.version,
            "status": doc.status,
            "content_type": doc.content_type,
            "size": doc.size,
            "attempts": doc.attempts,
        },
        "history": [
            {
                "id": h.id,
                "category": h.error_category,
                "message": h.error_message,
                "created_at": h.created_at,
                "replayed_at": h.replayed_at,
            }
            for h in history
        ],
        "calls": [
            {
                "attempt": c.attempt,
                "provider": c.provider,
                "model": c.model,
                "outcome": c.outcome,
                "error": c.error_message,
                "cost_usd": c.cost_usd,
                "created_at": c.created_at,
            }
            for c in calls
        ],
    }


def replay(session: Session, letter_id: int) -> int | None:
    """Mark the letter replayed and give its document back as pending; returns the document id
    to enqueue, or None when the letter was replayed already (replay is idempotent)."""
    document_id = session.execute(
        update(DeadLetter)
        .where(DeadLetter.id == letter_id, DeadLetter.replayed_at.is_(None))
        .values(replayed_at=func.now(), replay_count=DeadLetter.replay_count + 1)
        .returning(DeadLetter.document_id)
    ).scalar_one_or_none()
    if document_id is None:
        return None
    session.execute(
        update(Document)
        .where(Document.id == document_id, Document.status == DocumentStatus.FAILED.value)
        .values(
            status=DocumentStatus.PENDING.value,
            stage=Stage.PREPARE.value,
            error_category=None,
            error_message=None,
            finished_at=None,
            lease_until=None,
            lease_owner=None,
            updated_at=func.now(),
        )
    )
    return document_id


def open_letter_ids(session: Session, category: str | None = None) -> list[int]:
    query = select(DeadLetter.id).where(DeadLetter.replayed_at.is_(None))
    if category:
        query = query.where(DeadLetter.error_category == category)
    return list(session.execute(query.order_by(DeadLetter.id)).scalars())


def purge(session: Session, *, category: str | None = None, replayed_only: bool = False) -> int:
    """Delete dead letters (the documents stay, failed, with their error)."""
    stmt = delete(DeadLetter)
    if category:
        stmt = stmt.where(DeadLetter.error_category == category)
    if replayed_only:
        stmt = stmt.where(DeadLetter.replayed_at.is_not(None))
    return len(session.execute(stmt.returning(DeadLetter.id)).all())
