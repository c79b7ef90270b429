"""Pages and their payloads: stored by the prepare stage, read back by extraction and grounding."""

from __future__ import annotations

import functools
from collections.abc import Iterator, Sequence
from typing import Any

from sqlalchemy import Select, and_, bindparam, func, select
from sqlalchemy.dialects.postgresql import Insert, insert
from sqlalchemy.orm import Session, sessionmaker

from pipeline.db.tables import PAGES, PAYLOADS
from pipeline.domain import PageContent, PageStatus, Word
from pipeline.grounding import PageWords


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
    stmt = insert(PAGES)
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
        where=PAGES.c.status != PageStatus.EXTRACTED.value,
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
    stmt = insert(PAYLOADS)
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
    pages, payloads = PAGES.c, PAYLOADS.c
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
            PAGES,
            PAYLOADS,
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
    payloads = PAYLOADS.c
    return (
        select(payloads.page_index, payloads.words)
        .where(
            payloads.document_id == bindparam("document_id"),
            payloads.page_index >= bindparam("start"),
            payloads.page_index < bindparam("stop"),
        )
        .order_by(payloads.page_index)
    )
