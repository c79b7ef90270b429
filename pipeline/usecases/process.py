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
from typing import TYPE_CHECKING, Any, TypeGuard

import cv2
import numpy as np
from PIL import Image
from sqlalchemy.orm import Session, sessionmaker

from pipeline import ocr, storage
from pipeline.cost.hooks import DocumentBudgetSpent, Waiting
from pipeline.costing import PriceTable
from pipeline.db import repository as repo
from pipeline.db.models import Document
from pipeline.db.session import UNAVAILABLE, patiently, transaction
from pipeline.domain import (
    CallRecord,
    DocumentStatus,
    ExtractionResult,
    ObjectRef,
    PageContent,
    PageStatus,
    Stage,
)
from pipeline.duplicates import check_duplicates
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError
from pipeline.extractors.base import Extractor, ReviewsItsResult
from pipeline.pages import Limits, LoadedDocument, open_document
from pipeline.ratelimit import NoRateLimiter, RateLimiter
from pipeline.schemas import SchemaSpec, get_schema
from pipeline.settings import Settings
from pipeline.text.layer import trust_text_layer
from pipeline.usecases.einvoice import extractor_for_source
from pipeline.usecases.extract import ExtractOptions, Meter, chunked, extract_pages, recheck
from pipeline.usecases.verify import ChunkedPages, verify

if TYPE_CHECKING:
    from pipeline.cost.control import CostServices, DocumentCost

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
        options, dpi = ocr.thorough_options(settings), settings.ocr_dpi
    else:
        options, dpi = ocr.fast_options(settings), settings.ocr_grounding_dpi
    with ocr.timed("decode"):
        image = _page_image(page, renderer, dpi, settings.max_image_pixels)
    page.words = ocr.ocr_page(image, page.width_pt, options)


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
            return _finish(deps, document_id, claimed, extractor, result, kept, source, meter)
        finally:
            source.close()
    except TransientError as exc:
        _give_back(deps, document_id, meter, exc)
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
        return _finish(
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
        _hold(deps, document_id, meter, waiting, owner)
        return None
    except DocumentBudgetSpent as spent:
        return _over_budget(deps, document_id, claimed, extractor, meter, spent)
    except TransientError as exc:
        checkpoints.flush()  # what was paid for stays, whatever failed after it
        _give_back(deps, document_id, meter, exc)
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


class DatabaseCheckpoints:
    """Chunk answers in Postgres (chunk_results), written with the calls that paid for them,
    waiting for the database if it is down: an answer that arrived is kept, not asked for again.

    A document of several chunks writes each answer as soon as it is validated (a worker killed
    half-way loses no finished chunk). A one-chunk document writes its answer with the result,
    in the final transaction, or with `flush` when anything after the call fails (a re-check the
    provider refused, a database that went away): the common path costs no extra transaction;
    only a worker killed between the answer and its storage pays for that answer again."""

    def __init__(
        self,
        deps: Collaborators,
        document_id: int,
        claimed: Claimed,
        meter: Meter,
        deadline: float,
        *,
        eager: bool,
    ) -> None:
        self.deps, self.document_id, self.schema = deps, document_id, claimed.schema
        self.meter, self.deadline, self.eager = meter, deadline, eager
        self._saved: dict[tuple[int, int], dict[str, Any]] = {}
        self._unwritten: dict[tuple[int, int], dict[str, Any]] = {}
        self._calls_written = 0
        if claimed.checkpointed:
            with deps.sessions() as session:
                self._saved = repo.load_checkpoints(
                    session, document_id, self.schema.name, self.schema.version
                )
            if self._saved:
                log.info(
                    "document %s: resuming from %d checkpointed chunk(s)",
                    document_id,
                    len(self._saved),
                )

    def load(self, first: int, stop: int) -> dict[str, Any] | None:
        return self._saved.get((first, stop))

    def save(self, first: int, stop: int, record: dict[str, Any]) -> None:
        self._saved[(first, stop)] = record
        self._unwritten[(first, stop)] = record
        if self.eager:
            self.flush()

    def flush(self) -> None:
        """Write the answers not written yet, with the calls made so far."""
        if not self._unwritten:
            return
        unwritten = dict(self._unwritten)
        # The calls of a validated chunk are final: write the ones not written yet.
        calls = self.meter.calls[self._calls_written :]

        def write(session: Session) -> None:
            repo.record_calls(session, self.document_id, calls)
            for (first, stop), record in unwritten.items():
                repo.save_checkpoint(
                    session,
                    self.document_id,
                    first,
                    stop,
                    self.schema.name,
                    self.schema.version,
                    record,
                )

        _keep(self.deps, write, self.deadline, self.document_id)
        self._calls_written += len(calls)
        for key in unwritten:
            self._unwritten.pop(key, None)


def _keep(
    deps: Collaborators, write: Callable[[Session], Any], deadline: float, document_id: int
) -> Any:
    """Write what was paid for, waiting for the database while it is down (until `deadline`)."""
    try:
        return patiently(deps.sessions, write, deadline=deadline)
    except UNAVAILABLE:
        log.warning(
            "document %s: the database stayed down past the task's time limit; the answer "
            "held in memory is lost and will be asked for again",
            document_id,
        )
        raise


def check_result(
    extractor: Extractor,
    schema: SchemaSpec,
    result: ExtractionResult,
    pages: list[PageContent] | ChunkedPages,
    renderer: Any,
    prices: PriceTable,
    meter: Meter,
    options: ExtractOptions,
) -> ExtractionResult:
    """Rules and grounding; a cascade's stronger model for pages that fail them, then one bounded
    re-check of fields that break a rule; sets the result's grounding and review reasons."""
    assert result.data is not None
    verdict = verify(schema, result.data, pages, confidence=result.confidence, notes=result.notes)
    cost = options.cost if _is_document_cost(options.cost) else None
    spent: DocumentBudgetSpent | None = None
    try:
        if cost is not None and (verdict.failures or verdict.ungrounded):
            escalated = cost.escalate(
                extractor,
                result,
                verdict.failures,
                verdict.grounding,
                verdict.ungrounded,
                renderer,
                meter,
                options,
            )
            if escalated is not None:
                result, extractor = escalated
                assert result.data is not None
                # The stronger model's answer: the rules' own confidences no longer apply.
                verdict = verify(schema, result.data, pages, notes=result.notes)
        settled = cost is not None and cost.settled  # a checked answer from the page cache
        if verdict.failures and extractor.can_reask and options.max_rechecks > 0 and not settled:
            assert result.data is not None
            result.data = recheck(
                extractor,
                schema,
                result.data,
                verdict.failures,
                verdict.grounding,
                len(pages),
                renderer,
                prices,
                meter,
                options,
            )
            verdict = verify(schema, result.data, pages, notes=result.notes)
    except DocumentBudgetSpent as exc:
        spent = exc  # keep the answer as it stands; a human looks at it
    result.grounding = verdict.grounding
    assert result.data is not None
    if isinstance(extractor, ReviewsItsResult):
        reasons = extractor.review_reasons(result.data, verdict.failures, verdict.ungrounded)
    else:
        reasons = verdict.reasons
    result.review_reasons = reasons + ([spent.reason] if spent else [])
    result.calls = list(meter.calls)
    return result


def _is_document_cost(hooks: object) -> TypeGuard[DocumentCost]:
    from pipeline.cost.control import DocumentCost

    return isinstance(hooks, DocumentCost)


def _finish(
    deps: Collaborators,
    document_id: int,
    claimed: Claimed,
    extractor: Extractor,
    result: ExtractionResult,
    pages: list[PageContent] | ChunkedPages,
    renderer: Any,
    meter: Meter,
    options: ExtractOptions | None = None,
    *,
    deadline: float | None = None,
) -> DocumentStatus:
    options = options or options_from(deps.settings, deps.limiter)
    result = check_result(
        extractor, claimed.schema, result, pages, renderer, deps.prices, meter, options
    )
    if _is_document_cost(options.cost):
        options.cost.document_done(result, meter)
    reasons = list(result.review_reasons)

    def store(session: Session) -> DocumentStatus:
        # Under a lock on the invoice's key: of two copies finishing at once, one sees the other.
        # Checked again on each try of the write (the database may have been down).
        result.review_reasons = reasons + check_duplicates(
            session, document_id, result.schema_name, result.data
        )
        status = DocumentStatus.NEEDS_REVIEW if result.needs_review else DocumentStatus.DONE
        repo.record_calls(session, document_id, meter.calls)
        repo.save_extraction(session, document_id, result)
        repo.finish_document(session, document_id, status, pages=PageStatus.EXTRACTED)
        return status

    status: DocumentStatus
    if deadline is None:  # the offline extractor: nothing paid, nothing to wait for
        with transaction(deps.sessions) as session:
            status = store(session)
    else:
        status = _keep(deps, store, deadline, document_id)
    log.info(
        "document %s %s: %d page(s), %d call(s), $%s",
        document_id,
        status.value,
        len(pages),
        len(meter.calls),
        meter.cost_usd,
    )
    return status


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


def _hold(
    deps: Collaborators, document_id: int, meter: Meter, waiting: Waiting, owner: str | None
) -> None:
    """Nothing failed: the document waits (visible as `waiting.reason`) and resumes by itself."""
    from pipeline.cost.waiting import hold

    with transaction(deps.sessions) as session:
        repo.record_calls(session, document_id, meter.calls)
        hold(session, document_id, waiting, owner)
    log.info("document %s waits (%s): %s", document_id, waiting.reason, waiting.message)


def _over_budget(
    deps: Collaborators,
    document_id: int,
    claimed: Claimed,
    extractor: Extractor,
    meter: Meter,
    spent: DocumentBudgetSpent,
) -> DocumentStatus:
    """The document's own budget ran out before it had an answer: no more calls; a human
    looks at it (review), with the reason."""
    result = ExtractionResult(
        schema_name=claimed.schema.name,
        schema_version=claimed.schema.version,
        provider=extractor.provider,
        model=extractor.model,
        data=None,
        valid=False,
        errors=[spent.reason],
        calls=list(meter.calls),
        review_reasons=[spent.reason],
    )
    with transaction(deps.sessions) as session:
        repo.record_calls(session, document_id, meter.calls)
        repo.save_extraction(session, document_id, result)
        repo.finish_document(
            session, document_id, DocumentStatus.NEEDS_REVIEW, pages=PageStatus.EXTRACTED
        )
    log.info("document %s needs review: %s", document_id, spent.reason)
    return DocumentStatus.NEEDS_REVIEW


def _give_back(deps: Collaborators, document_id: int, meter: Meter, exc: TransientError) -> None:
    with transaction(deps.sessions) as session:
        repo.record_calls(session, document_id, meter.calls)
        repo.release_for_retry(session, document_id, exc)


def fail_document(
    sessions: sessionmaker[Session],
    document_id: int,
    error: PipelineError,
    *,
    meter: Meter | None = None,
    task_name: str = "process",
) -> None:
    """Final failure: the document says why, and a dead letter keeps it for replay."""
    with transaction(sessions) as session:
        if meter is not None:
            repo.record_calls(session, document_id, meter.calls)
        doc = session.get(Document, document_id)
        attempts = doc.attempts if doc else 0
        repo.finish_document(
            session, document_id, DocumentStatus.FAILED, error, pages=PageStatus.FAILED
        )
        repo.add_dead_letter(session, document_id, task_name, error, attempts)
    log.warning("document %s failed: %s", document_id, error)


def give_up(sessions: sessionmaker[Session], document_id: int, error: BaseException) -> None:
    """Retries ran out (or an unexpected error): fail for good with the last error."""
    if not isinstance(error, PipelineError):
        error = PermanentError(ErrorCategory.INTERNAL, f"{type(error).__name__}: {error}")
    fail_document(sessions, document_id, error)


def _record_started(deps: Collaborators, document_id: int, call: CallRecord) -> None:
    # Its own transaction, committed before the request goes out: a worker killed mid-call
    # leaves this row, so a call the provider may bill is never missing from vlm_calls.
    with transaction(deps.sessions) as session:
        repo.record_calls(session, document_id, [call])
