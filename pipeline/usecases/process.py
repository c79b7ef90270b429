"""Process one document end to end: claim → download → split → extract → validate → store."""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from pipeline import storage
from pipeline.costing import PriceTable
from pipeline.db import repository as repo
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ObjectRef, PageStatus
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError
from pipeline.extractors.base import Extractor
from pipeline.pages import Limits, opened
from pipeline.ratelimit import NoRateLimiter, RateLimiter
from pipeline.schemas import get_schema
from pipeline.settings import Settings
from pipeline.usecases.extract import ExtractOptions, Meter, extract_pages

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Collaborators:
    """What processing needs from the outside world, built once per worker process."""

    sessions: sessionmaker[Session]
    s3: Any
    extractor_for: Any  # Callable[[str], Extractor]: provider name -> extractor
    prices: PriceTable
    settings: Settings
    limiter: RateLimiter = field(default_factory=NoRateLimiter)


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
        expected_max_tokens=settings.anthropic_max_tokens,
        limiter=limiter or NoRateLimiter(),
    )


def process_document(deps: Collaborators, document_id: int) -> DocumentStatus | None:
    """Run the document to a final state, or raise TransientError after giving it back.

    Returns None when there was nothing to do: the document is final already or another
    worker holds its lease (a duplicate or redelivered message).
    """
    settings = deps.settings
    lease = timedelta(seconds=settings.lease_s)
    with transaction(deps.sessions) as session:
        doc = repo.claim_document(session, document_id, lease)
        if doc is None:
            return None
        if repo.valid_extraction(session, document_id, doc.schema_name) is not None:
            # Crashed after the result was stored: finish, never call the model again.
            repo.finish_document(session, document_id, DocumentStatus.DONE)
            return DocumentStatus.DONE
        ref = ObjectRef(bucket=doc.bucket, key=doc.key, version=doc.version)
        schema_name, provider = doc.schema_name, doc.provider or settings.default_provider

    meter = Meter()
    try:
        extractor: Extractor = deps.extractor_for(provider)
        schema = get_schema(schema_name)
        data = storage.download(deps.s3, ref, settings.max_file_bytes)
        with opened(data, limits_from(settings)) as source:
            with transaction(deps.sessions) as session:
                repo.record_source(
                    session,
                    document_id,
                    size=len(data),
                    sha256=hashlib.sha256(data).hexdigest(),
                    content_type=source.media_type,
                )
                repo.record_layout(
                    session, document_id, page_count=source.page_count, repaired=source.repaired
                )
            del data
            pages = list(source.pages())
            with transaction(deps.sessions) as session:
                repo.record_pages(session, document_id, pages)
            result = extract_pages(
                extractor, schema, pages, source, deps.prices, meter, options_from(settings, deps.limiter)
            )
    except TransientError as exc:
        with transaction(deps.sessions) as session:
            _write_calls(session, document_id, meter)
            repo.release_for_retry(session, document_id, exc)
        raise
    except PermanentError as exc:
        fail_document(deps.sessions, document_id, exc, meter=meter, task_name="process_document")
        return DocumentStatus.FAILED

    with transaction(deps.sessions) as session:
        _write_calls(session, document_id, meter)
        repo.save_extraction(session, document_id, result)
        repo.mark_pages(session, document_id, PageStatus.EXTRACTED)
        repo.finish_document(session, document_id, DocumentStatus.DONE)
    log.info(
        "document %s done: %d page(s), %d call(s), $%s",
        document_id,
        len(pages),
        len(meter.calls),
        meter.cost_usd,
    )
    return DocumentStatus.DONE


def fail_document(
    sessions: sessionmaker[Session],
    document_id: int,
    error: PipelineError,
    *,
    meter: Meter | None = None,
    task_name: str = "process_document",
) -> None:
    """Final failure: the document says why, and a dead letter keeps it for replay."""
    with transaction(sessions) as session:
        if meter is not None:
            _write_calls(session, document_id, meter)
        doc = repo.get_document(session, document_id)
        attempts = doc.attempts if doc else 0
        repo.mark_pages(session, document_id, PageStatus.FAILED)
        repo.finish_document(session, document_id, DocumentStatus.FAILED, error)
        repo.add_dead_letter(session, document_id, task_name, error, attempts)
    log.warning("document %s failed: %s", document_id, error)


def give_up(sessions: sessionmaker[Session], document_id: int, error: BaseException) -> None:
    """Retries ran out (or an unexpected error): fail for good with the last error."""
    if not isinstance(error, PipelineError):
        error = PermanentError(ErrorCategory.INTERNAL, f"{type(error).__name__}: {error}")
    fail_document(sessions, document_id, error)


def _write_calls(session: Session, document_id: int, meter: Meter) -> None:
    for call in meter.calls:
        repo.record_call(session, document_id, call)
