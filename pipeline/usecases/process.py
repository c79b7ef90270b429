"""Process one document in two stages: prepare (CPU) and extract (I/O), then verify and store.

prepare: claim → download → sniff → split and render pages → OCR scanned pages → store pages.
         A CPU-bound extractor (the offline one) extracts right here; a model provider's
         document moves on to the extract stage.
extract: claim → load stored pages chunk by chunk → provider calls → validate → checkpoint
         each chunk's answer → re-check fields that fail a rule → ground every value → store →
         done or needs_review.

An answer that arrived is never paid for twice: each chunk's validated answer is checkpointed
with the calls' rows (as soon as it arrives when the document takes several calls; for a
one-chunk document with its result, or as soon as anything after the call fails) and a retry
resumes from the checkpoints; while the database is down, the answer waits in the process and
the write is retried (`patiently`), up to the task's soft time limit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import cv2
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from pipeline import metrics, ocr, storage
from pipeline.cost.hooks import DocumentBudgetSpent, Waiting
from pipeline.costing import PriceTable
from pipeline.db import repository as repo
from pipeline.db.session import UNAVAILABLE, transaction
from pipeline.domain import (
    CallRecord,
    DocumentStatus,
    ObjectRef,
    PageContent,
    Stage,
)
from pipeline.errors import PermanentError, TransientError
from pipeline.extractors.base import Extractor
from pipeline.pages import Limits, LoadedDocument, open_document
from pipeline.ratelimit import NoRateLimiter, RateLimiter
from pipeline.schemas import SchemaSpec, get_schema
from pipeline.settings import Settings
from pipeline.text.layer import trust_text_layer
from pipeline.usecases.checkpoints import DatabaseCheckpoints
from pipeline.usecases.einvoice import extractor_for_source
from pipeline.usecases.extract import ExtractOptions, Meter, chunked, extract_pages
from pipeline.usecases.finish import (
    check_result,
    fail_document,
    finish_over_budget,
    finish_with_result,
    give_back,
    give_up,
    hold_waiting,
)
from pipeline.usecases.verify import ChunkedPages

if TYPE_CHECKING:
    from pipeline.cost.control import CostServices, DocumentCost

# check_result, fail_document and give_up live in pipeline/usecases/finish.py; importable from
# here as well, where callers have always found them.
__all__ = [
    "Claimed",
    "Collaborators",
    "SourceRenderer",
    "check_result",
    "ensure_words",
    "extract_document",
    "fail_document",
    "give_up",
    "limits_from",
    "options_from",
    "prepare_document",
]

log = logging.getLogger(__name__)

_STORE_BATCH = 16  # pages per transaction in the prepare stage: bounded memory, few commits


@dataclass(frozen=True, slots=True)
class Collaborators:
    """What processing needs from the outside world, built once per worker process."""

    sessions: sessionmaker[Session]
    s3: Any
    extractor_for: Callable[[str], Extractor]
    prices: PriceTable
    settings: Settings
    limiter: RateLimiter = field(default_factory=NoRateLimiter)
    # Budgets, caps, page cache, cascade, prompt caching, batch and failover (pipeline/cost);
    # None: every call is made as asked.
    cost: CostServices | None = None


def limits_from(settings: Settings) -> Limits:
    return Limits(
        max_pages=settings.max_pages,
        max_image_pixels=settings.max_image_pixels,
        long_edge_px=settings.image_long_edge_px,
    )


def options_from(settings: Settings, limiter: RateLimiter | None = None) -> ExtractOptions:
    return ExtractOptions(
        pages_per_call=settings.pages_per_call,
        max_reasks=settings.max_reasks,
        limiter=limiter or NoRateLimiter(),
        max_rechecks=settings.max_rechecks,
        tile_long_edge=settings.image_long_edge_px,
    )


def ensure_words(
    page: PageContent, renderer: LoadedDocument, settings: Settings, *, for_extraction: bool = True
) -> None:
    """Positioned words for a page without a text layer worth reading, by OCR: the thorough
    setting when the offline extractor reads them (`for_extraction`), the fast one when they
    only ground a model's answer."""
    if trust_text_layer(page.words):
        return
    if for_extraction:
        setting, options, dpi = "thorough", ocr.thorough_options(settings), settings.ocr_dpi
    else:
        setting, options, dpi = "fast", ocr.fast_options(settings), settings.ocr_grounding_dpi
    before = ocr.step_cpu()
    with ocr.timed("decode"):
        image = _page_image(page, renderer, dpi, settings.max_image_pixels)
    page.words = ocr.ocr_page(image, page.width_pt, options)
    after = ocr.step_cpu()
    metrics.page_ocred(setting, {s: after.get(s, 0.0) - before.get(s, 0.0) for s in ocr.STEPS})


def _page_image(
    page: PageContent, renderer: LoadedDocument, dpi: int, max_pixels: int
) -> Image.Image:
    """The page at about `dpi`: the model's own image when it is close enough (decoded once
    more instead of rendered again), else a render bounded to `max_pixels`."""
    if page.image and page.render_dpi >= 0.85 * dpi:
        gray = cv2.imdecode(np.frombuffer(page.image, np.uint8), cv2.IMREAD_GRAYSCALE)
        if gray is not None:
            return Image.fromarray(gray)
    area_in2 = (page.width_pt / 72.0) * (page.height_pt / 72.0)
    if area_in2 > 0:
        dpi = max(36, min(dpi, int(math.sqrt(max_pixels / area_in2))))
    return renderer.render(page.index, dpi)


@dataclass(frozen=True, slots=True)
class Claimed:
    ref: ObjectRef
    schema: SchemaSpec
    provider: str
    page_count: int | None
    checkpointed: bool = False


def _claim(
    deps: Collaborators, document_id: int, stage: Stage, owner: str | None
) -> Claimed | DocumentStatus | None:
    with transaction(deps.sessions) as session:
        doc = repo.claim_document(
            session, document_id, timedelta(seconds=deps.settings.lease_s), stage, owner
        )
        if doc is None:
            return None
        if doc.stored_result:
            # Crashed after the result was stored: finish, never call the model again.
            existing = repo.valid_extraction(session, document_id, doc.schema_name)
            needs_review = existing is not None and bool(existing.review_reasons)
            status = DocumentStatus.NEEDS_REVIEW if needs_review else DocumentStatus.DONE
            repo.finish_document(session, document_id, status)
            return status
        return Claimed(
            ref=ObjectRef(bucket=doc.bucket, key=doc.key, version=doc.version),
            schema=get_schema(doc.schema_name),
            provider=doc.provider or deps.settings.default_provider,
            page_count=doc.page_count,
            checkpointed=doc.checkpointed,
        )


def prepare_document(
    deps: Collaborators, document_id: int, owner: str | None = None
) -> Stage | DocumentStatus | None:
    """The CPU stage. Returns the next stage, a final status, or None when there was nothing
    to do (final already, or another worker holds the document). `owner` identifies the task,
    so that its retry can take back a lease it could not release."""
    claimed = _claim(deps, document_id, Stage.PREPARE, owner)
    if not isinstance(claimed, Claimed):
        return claimed
    settings = deps.settings
    meter = Meter()
    try:
        extractor = deps.extractor_for(claimed.provider)
        data = storage.download(deps.s3, claimed.ref, settings.max_file_bytes)
        source = open_document(data, limits_from(settings))
        try:
            extractor = extractor_for_source(extractor, source, claimed.schema, settings)
            facts = repo.SourceFacts(
                size=len(data),
                sha256=hashlib.sha256(data).hexdigest(),
                content_type=source.media_type,
                page_count=source.page_count,
                repaired=source.repaired,
            )
            del data
            ocr_pages = extractor.runs_locally or settings.ocr_scanned_pages
            kept: list[PageContent] = []
            # At least one pass: an XML e-invoice has no pages but its source facts are stored.
            for index in range(0, max(source.page_count, 1), _STORE_BATCH):
                stop = min(index + _STORE_BATCH, source.page_count)
                batch = [source.page(i) for i in range(index, stop)]
                for page in batch:
                    if ocr_pages:
                        ensure_words(page, source, settings, for_extraction=extractor.runs_locally)
                # Few transactions: the source facts go with the first batch, the hand-over to
                # the extract stage with the last (a one-page document is one transaction).
                with transaction(deps.sessions) as session:
                    if index == 0:
                        repo.record_source(session, document_id, facts)
                    repo.record_pages(session, document_id, batch)
                    if not extractor.runs_locally:
                        repo.store_payloads(session, document_id, batch)
                        if stop == source.page_count:
                            repo.advance_stage(session, document_id, Stage.EXTRACT)
                if extractor.runs_locally:
                    for page in batch:
                        page.image = b""  # the words are all the offline extractor reads
                    kept.extend(batch)
            if not extractor.runs_locally:
                return Stage.EXTRACT
            options = options_from(settings, deps.limiter)
            result = extract_pages(
                extractor,
                claimed.schema,
                chunked(kept, max(len(kept), 1)),
                source,
                deps.prices,
                meter,
                options,
            )
            return finish_with_result(
                deps, document_id, claimed, extractor, result, kept, source, meter, options
            )
        finally:
            source.close()
    except TransientError as exc:
        give_back(deps, document_id, meter, exc)
        raise
    except PermanentError as exc:
        fail_document(deps.sessions, document_id, exc, meter=meter, task_name="prepare")
        return DocumentStatus.FAILED


def extract_document(
    deps: Collaborators, document_id: int, owner: str | None = None
) -> DocumentStatus | None:
    """The I/O stage: model calls over the pages the prepare stage stored."""
    claimed = _claim(deps, document_id, Stage.EXTRACT, owner)
    if not isinstance(claimed, Claimed):
        return claimed
    settings = deps.settings
    # Answers wait in this process for the database until shortly before the task's soft time
    # limit; the lease (longer than the hard limit) keeps the document ours until then.
    deadline = time.monotonic() + settings.soft_time_limit_s - _DEADLINE_MARGIN_S
    meter = Meter(on_start=lambda call: _record_started(deps, document_id, call))
    renderer = SourceRenderer(deps.s3, claimed.ref, settings)
    checkpoints = DatabaseCheckpoints(
        deps,
        document_id,
        claimed,
        meter,
        deadline,
        eager=(claimed.page_count or 0) > settings.pages_per_call,
    )
    options = options_from(settings, deps.limiter)
    cost: DocumentCost | None = None
    try:
        extractor = deps.extractor_for(claimed.provider)
        page_count = claimed.page_count or 0
        size = settings.pages_per_call

        loaded: list[PageContent] = []

        def chunks() -> Iterator[list[PageContent]]:
            for start in range(0, page_count, size):
                # Load, then close the session before yielding: a generator left suspended
                # must not hold a transaction (and its locks) open.
                with deps.sessions() as session:
                    pages = repo.load_pages(session, document_id, start, start + size)
                if page_count <= size:
                    loaded.extend(pages)  # one chunk: grounding reuses it, no second read
                yield pages

        if deps.cost is not None:
            cost = deps.cost.for_document(
                document_id,
                claimed.schema,
                page_count,
                deps.extractor_for,
                lambda: _load_chunks(deps, document_id, page_count, size),
            )
            extractor = cost.first_extractor(extractor)
            meter.on_start = cost.start_call
            cost.checkpoints = checkpoints  # the cascade re-extracts on top of them
            options = dataclasses.replace(options, cost=cost)

        result = extract_pages(
            extractor,
            claimed.schema,
            chunks(),
            renderer,
            deps.prices,
            meter,
            options,
            checkpoints,
        )
        words_only: list[PageContent] | ChunkedPages
        if loaded:
            for page in loaded:
                page.image = b""  # grounding reads words only: let the pixels go
            words_only = loaded
        else:
            # Grounding streams over the words chunk by chunk (twice after a re-check): memory
            # stays that of one chunk however long the document.
            words_only = ChunkedPages(
                page_count,
                lambda: repo.iter_page_words(deps.sessions, document_id, 0, page_count, size),
            )
        return finish_with_result(
            deps,
            document_id,
            claimed,
            extractor,
            result,
            words_only,
            renderer,
            meter,
            options,
            deadline=deadline,
        )
    except Waiting as waiting:
        hold_waiting(deps, document_id, meter, waiting, owner)
        return None
    except DocumentBudgetSpent as spent:
        return finish_over_budget(deps, document_id, claimed, extractor, meter, spent)
    except TransientError as exc:
        checkpoints.flush()  # what was paid for stays, whatever failed after it
        give_back(deps, document_id, meter, exc)
        raise
    except UNAVAILABLE:
        checkpoints.flush()  # waits for the database: the answers are written, not lost
        raise
    except PermanentError as exc:
        fail_document(deps.sessions, document_id, exc, meter=meter, task_name="extract")
        return DocumentStatus.FAILED
    finally:
        renderer.close()


def _load_chunks(
    deps: Collaborators, document_id: int, page_count: int, size: int
) -> Iterator[list[PageContent]]:
    """The stored pages again, chunk by chunk (the cascade re-reads the pages it escalates)."""
    for start in range(0, page_count, size):
        with deps.sessions() as session:
            pages = repo.load_pages(session, document_id, start, start + size)
        yield pages


_DEADLINE_MARGIN_S = 15.0


class SourceRenderer:
    """Renders pages of the original file on demand (re-reads at higher resolution), fetching
    it from the bucket only when first needed."""

    def __init__(self, s3: Any, ref: ObjectRef, settings: Settings) -> None:
        self.s3, self.ref, self.settings = s3, ref, settings
        self._source: LoadedDocument | None = None

    def render(self, index: int, dpi: int) -> Image.Image:
        if self._source is None:
            data = storage.download(self.s3, self.ref, self.settings.max_file_bytes)
            self._source = open_document(data, limits_from(self.settings))
        return self._source.render(index, dpi)

    def close(self) -> None:
        if self._source is not None:
            self._source.close()


def _record_started(deps: Collaborators, document_id: int, call: CallRecord) -> None:
    # Its own transaction, committed before the request goes out: a worker killed mid-call
    # leaves this row, so a call the provider may bill is never missing from vlm_calls.
    with transaction(deps.sessions) as session:
        repo.record_calls(session, document_id, [call])
