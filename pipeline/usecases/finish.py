"""The end of a document's extraction: check the result and store it; or hold, release, fail."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, TypeGuard

from sqlalchemy.orm import Session, sessionmaker

from pipeline.cost.hooks import DocumentBudgetSpent, Waiting
from pipeline.costing import PriceTable
from pipeline.db import repository as repo
from pipeline.db.models import Document
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, ExtractionResult, PageContent, PageStatus
from pipeline.duplicates import check_duplicates
from pipeline.errors import ErrorCategory, PermanentError, PipelineError, TransientError
from pipeline.extractors.base import Extractor, ReviewsItsResult
from pipeline.schemas import SchemaSpec
from pipeline.usecases.checkpoints import keep_paid_for
from pipeline.usecases.extract import ExtractOptions, Meter, recheck
from pipeline.usecases.verify import ChunkedPages, verify

if TYPE_CHECKING:
    from pipeline.cost.control import DocumentCost
    from pipeline.usecases.process import Claimed, Collaborators

# The lines keep the logger name they had when this was part of process.py: log queries
# and tests select a stage's lines by it.
log = logging.getLogger("pipeline.usecases.process")


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


def finish_with_result(
    deps: Collaborators,
    document_id: int,
    claimed: Claimed,
    extractor: Extractor,
    result: ExtractionResult,
    pages: list[PageContent] | ChunkedPages,
    renderer: Any,
    meter: Meter,
    options: ExtractOptions,
    *,
    deadline: float | None = None,
) -> DocumentStatus:
    """Check the result, then store it with the calls and finish the document (done or
    needs_review); `deadline`: wait for the database until then (an answer that was paid for)."""
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
        status = keep_paid_for(deps, store, deadline, document_id)
    log.info(
        "document %s %s: %d page(s), %d call(s), $%s",
        document_id,
        status.value,
        len(pages),
        len(meter.calls),
        meter.cost_usd,
    )
    return status


def hold_waiting(
    deps: Collaborators, document_id: int, meter: Meter, waiting: Waiting, owner: str | None
) -> None:
    """Nothing failed: the document waits (visible as `waiting.reason`) and resumes by itself."""
    from pipeline.cost.waiting import hold

    with transaction(deps.sessions) as session:
        repo.record_calls(session, document_id, meter.calls)
        hold(session, document_id, waiting, owner)
    log.info("document %s waits (%s): %s", document_id, waiting.reason, waiting.message)


def finish_over_budget(
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


def give_back(deps: Collaborators, document_id: int, meter: Meter, exc: TransientError) -> None:
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
