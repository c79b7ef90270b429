"""Batch mode: non-urgent documents' model calls go through the provider's batch API at a
discount. The extract stage queues a call and the document waits; a periodic task submits the
queued calls in groups, polls the batches, matches results to calls by `custom_id`, records
each as a `vlm_calls` row (service tier `batch`), retries errors and expiries (a fresh
submission, a fresh row) up to `batch_max_attempts`, and wakes the documents. A resumed
document finds the answer to the call it is about to make by the call's key (chunk, purpose,
ordinal) and carries on; the next call it needs is queued the same way.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select, text, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session, sessionmaker

from pipeline.cost.batch_api import BatchCapable, BatchOutcome
from pipeline.cost.budget import charge_caps, object_url
from pipeline.cost.hooks import BudgetExceeded
from pipeline.costing import BATCH_TIER, PriceTable
from pipeline.db import repository as repo
from pipeline.db.cost_models import BatchRequest, MessageBatch
from pipeline.db.models import Document, VlmCall
from pipeline.db.session import transaction
from pipeline.domain import (
    CallOutcome,
    CallPurpose,
    CallRecord,
    ExtractionRequest,
    ProviderReply,
    Savings,
    Usage,
)
from pipeline.errors import ErrorCategory, PermanentError, PipelineError
from pipeline.extractors.base import Extractor
from pipeline.schemas import get_schema
from pipeline.validation import validate

log = logging.getLogger(__name__)

QUEUED, SUBMITTING, SUBMITTED, SUCCEEDED, FAILED = (
    "queued",
    "submitting",
    "submitted",
    "succeeded",
    "failed",
)
# A group marked `submitting` whose submission never recorded a batch id (the process died
# between the two) goes back to the queue after this long.
STALE_SUBMISSION = timedelta(minutes=15)


def call_key(purpose: CallPurpose, page_indexes: list[int], ordinal: int) -> str:
    pages = f"{page_indexes[0]}-{page_indexes[-1]}" if page_indexes else "-"
    return f"{purpose.value}:{pages}:{ordinal}"


# --- the extract stage's side -------------------------------------------------------------------


def find(session: Session, document_id: int, key: str) -> BatchRequest | None:
    return session.execute(
        select(BatchRequest).where(
            BatchRequest.document_id == document_id, BatchRequest.call_key == key
        )
    ).scalar_one_or_none()


def queue(
    session: Session,
    *,
    document_id: int,
    key: str,
    extractor: BatchCapable,
    request: ExtractionRequest,
    purpose: CallPurpose,
    page_indexes: list[int],
    estimated_input_tokens: int | None,
    estimated_cost_usd: Decimal | None,
) -> None:
    session.execute(
        insert(BatchRequest)
        .values(
            document_id=document_id,
            call_key=key,
            provider=extractor.provider,
            model=extractor.model,
            purpose=purpose.value,
            page_indexes=page_indexes,
            params=extractor.batch_params(request),
            estimated_input_tokens=estimated_input_tokens,
            estimated_cost_usd=estimated_cost_usd,
        )
        .on_conflict_do_nothing(constraint="uq_batch_requests_call")
    )


def answer_of(session: Session, row: BatchRequest) -> tuple[ProviderReply, CallRecord]:
    """A succeeded request's answer, and its call (already recorded: writing it again is a
    no-op)."""
    result = row.result or {}
    reply = ProviderReply(
        data=result.get("data"),
        usage=Usage(**(result.get("usage") or {})),
        request_id=result.get("request_id"),
        stop_reason=result.get("stop_reason"),
        truncated=bool(result.get("truncated")),
        problem=result.get("problem"),
    )
    call = session.execute(select(VlmCall).where(VlmCall.call_id == row.call_id)).scalar_one()
    record = CallRecord(
        provider=call.provider,
        model=call.model,
        attempt=call.attempt,
        outcome=CallOutcome(call.outcome),
        latency_ms=call.latency_ms,
        usage=reply.usage,
        cost_usd=call.cost_usd,
        request_id=call.request_id,
        stop_reason=call.stop_reason,
        error_category=call.error_category,
        error_message=call.error_message,
        page_indexes=list(call.page_indexes),
        call_id=call.call_id,
        purpose=CallPurpose(call.purpose),
        estimated_input_tokens=call.estimated_input_tokens,
        estimated_cost_usd=call.estimated_cost_usd,
        savings=Savings(batch=call.saved_batch_usd),
    )
    return reply, record


def failure_of(row: BatchRequest) -> PermanentError:
    category = ErrorCategory(row.error_category or ErrorCategory.PROVIDER_UNAVAILABLE.value)
    return PermanentError(category, row.error_message or "batch request failed")


# --- the periodic task's side -------------------------------------------------------------------


@dataclass
class CycleReport:
    submitted: int = 0
    batches: int = 0
    collected: int = 0
    succeeded: int = 0
    retried: int = 0
    failed: int = 0
    held: int = 0  # queued requests a spending cap kept back
    woken: set[int] = field(default_factory=set)


@dataclass
class BatchRunner:
    """Submits and collects batches; `run_once` is the beat task's body."""

    sessions: sessionmaker[Session]
    extractor_for: Callable[[str], Extractor]
    prices: PriceTable
    wake: Callable[[Iterable[int]], object]
    max_requests: int = 2000
    min_requests: int = 100
    max_wait_s: float = 300.0
    max_attempts: int = 3
    recheck_s: float = 300.0

    def run_once(self, now: datetime | None = None) -> CycleReport:
        report = CycleReport()
        now = now or datetime.now(UTC)
        self._requeue_stale(now)
        self.submit(report, now)
        self.poll(report)
        if report.woken:
            self.wake(sorted(report.woken))
        return report

    # -- submission --------------------------------------------------------------------------

    def _requeue_stale(self, now: datetime) -> None:
        with transaction(self.sessions) as session:
            session.execute(
                update(BatchRequest)
                .where(
                    BatchRequest.status == SUBMITTING,
                    BatchRequest.updated_at < now - STALE_SUBMISSION,
                )
                .values(status=QUEUED, updated_at=func.now())
            )

    def submit(self, report: CycleReport, now: datetime) -> None:
        with self.sessions() as session:
            groups = session.execute(
                select(BatchRequest.provider, func.count(), func.min(BatchRequest.created_at))
                .where(BatchRequest.status == QUEUED)
                .group_by(BatchRequest.provider)
            ).all()
        for provider, count, oldest in groups:
            due = count >= self.min_requests or oldest <= now - timedelta(seconds=self.max_wait_s)
            if not due:
                continue
            extractor = self.extractor_for(provider)
            if not isinstance(extractor, BatchCapable):
                log.error("provider %s has no batch API; its queued requests wait", provider)
                continue
            while self._submit_group(extractor, report):
                pass

    def _submit_group(self, extractor: BatchCapable, report: CycleReport) -> bool:
        """Submit up to max_requests queued requests as one batch; False when none was left."""
        entries: list[tuple[str, dict[str, Any]]] = []
        ids: list[int] = []
        with transaction(self.sessions) as session:
            rows = session.execute(
                select(BatchRequest, Document.bucket, Document.key)
                .join(Document, Document.id == BatchRequest.document_id)
                .where(BatchRequest.status == QUEUED, BatchRequest.provider == extractor.provider)
                .order_by(BatchRequest.id)
                .limit(self.max_requests)
                .with_for_update(of=BatchRequest, skip_locked=True)
            ).all()
            if not rows:
                return False
            for row, bucket, key in rows:
                call_id = uuid.uuid4()
                record = CallRecord(
                    provider=row.provider,
                    model=row.model,
                    attempt=row.attempts + 1,
                    outcome=CallOutcome.STARTED,
                    latency_ms=0,
                    usage=Usage(service_tier=BATCH_TIER),
                    cost_usd=None,
                    page_indexes=list(row.page_indexes),
                    call_id=call_id,
                    purpose=CallPurpose(row.purpose),
                    estimated_input_tokens=row.estimated_input_tokens,
                    estimated_cost_usd=row.estimated_cost_usd,
                )
                try:
                    with session.begin_nested():
                        record.budget_ledger_ids = charge_caps(
                            session,
                            object_url(bucket, key),
                            row.estimated_cost_usd,
                            recheck_s=self.recheck_s,
                        )
                        repo.record_calls(session, row.document_id, [record])
                except BudgetExceeded:
                    report.held += 1  # stays queued until the cap allows it
                    continue
                row.status, row.call_id, row.attempts = SUBMITTING, call_id, row.attempts + 1
                row.updated_at = datetime.now(UTC)
                entries.append((call_id.hex, row.params or {}))
                ids.append(row.id)
        if not entries:
            return False
        try:
            state = extractor.submit_batch(entries)
        except PipelineError as exc:
            self._submission_failed(ids, exc)
            log.warning("batch submission to %s failed: %s", extractor.provider, exc)
            return False
        with transaction(self.sessions) as session:
            session.execute(
                update(BatchRequest)
                .where(BatchRequest.id.in_(ids))
                .values(status=SUBMITTED, batch_id=state.id, updated_at=func.now())
            )
            session.execute(
                insert(MessageBatch)
                .values(
                    id=state.id,
                    provider=extractor.provider,
                    model=extractor.model,
                    status=state.status,
                    request_count=len(ids),
                    request_ids=ids,
                    expires_at=state.expires_at,
                )
                .on_conflict_do_nothing()
            )
        report.submitted += len(ids)
        report.batches += 1
        log.info("submitted batch %s: %d request(s)", state.id, len(ids))
        return len(ids) == self.max_requests

    def _submission_failed(self, ids: list[int], exc: PipelineError) -> None:
        # The batch was refused: nothing was billed. Each call row says so; the requests go
        # back to the queue (a permanent refusal fails them, as it would a direct call).
        with transaction(self.sessions) as session:
            rows = session.execute(
                select(BatchRequest).where(BatchRequest.id.in_(ids)).with_for_update()
            ).scalars()
            for row in rows:
                self._finish_call(session, row, None, exc.category, exc.message)
                row.status = QUEUED if exc.transient else FAILED
                if not exc.transient:
                    row.error_category, row.error_message = exc.category.value, exc.message
                row.updated_at = datetime.now(UTC)

    # -- collection --------------------------------------------------------------------------

    def poll(self, report: CycleReport) -> None:
        with self.sessions() as session:
            open_batches = session.execute(
                select(MessageBatch.id, MessageBatch.provider).where(
                    MessageBatch.status != "collected"
                )
            ).all()
        for batch_id, provider in open_batches:
            extractor = self.extractor_for(provider)
            if not isinstance(extractor, BatchCapable):
                continue
            try:
                state = extractor.batch_state(batch_id)
            except PipelineError as exc:
                log.warning("polling batch %s failed: %s", batch_id, exc)
                continue
            with transaction(self.sessions) as session:
                session.execute(
                    update(MessageBatch)
                    .where(MessageBatch.id == batch_id)
                    .values(status=state.status, polled_at=func.now(), ended_at=state.ended_at)
                )
            if state.ended:
                self.collect(extractor, batch_id, report)

    def collect(self, extractor: BatchCapable, batch_id: str, report: CycleReport) -> None:
        with self.sessions() as session:
            rows = {
                row.call_id.hex: row
                for row in session.execute(
                    select(BatchRequest).where(
                        BatchRequest.batch_id == batch_id, BatchRequest.status == SUBMITTED
                    )
                ).scalars()
                if row.call_id is not None
            }
        params = {cid: row.params or {} for cid, row in rows.items()}
        seen: set[str] = set()
        try:
            for outcome in extractor.batch_results(batch_id, params):
                if outcome.custom_id in rows and outcome.custom_id not in seen:
                    seen.add(outcome.custom_id)
                    self._apply(rows[outcome.custom_id].id, outcome, report)
        except PipelineError as exc:
            log.warning("reading the results of batch %s failed: %s", batch_id, exc)
            return  # polled again next cycle; applied results are not applied twice
        for cid, row in rows.items():
            if cid not in seen:  # no line for it: as good as expired
                missing = BatchOutcome(
                    cid,
                    "expired",
                    error_category=ErrorCategory.TIMEOUT,
                    error_message="batch ended without a result for this request",
                    transient=True,
                )
                self._apply(row.id, missing, report)
        with transaction(self.sessions) as session:
            session.execute(
                update(MessageBatch)
                .where(MessageBatch.id == batch_id)
                .values(status="collected", polled_at=func.now())
            )
        report.collected += 1

    def _apply(self, request_id: int, outcome: BatchOutcome, report: CycleReport) -> None:
        with transaction(self.sessions) as session:
            row = session.get(BatchRequest, request_id, with_for_update=True)
            if row is None or row.status != SUBMITTED:
                return  # applied already (a poll that died half-way)
            if outcome.kind == "succeeded" and outcome.reply is not None:
                self._succeeded(session, row, outcome.reply)
                report.succeeded += 1
                report.woken.add(row.document_id)
            else:
                category = outcome.error_category or ErrorCategory.PROVIDER_UNAVAILABLE
                message = outcome.error_message or f"batch request {outcome.kind}"
                self._finish_call(session, row, None, category, message)
                if outcome.transient and row.attempts < self.max_attempts:
                    row.status = QUEUED  # a fresh submission (new custom_id, new call row)
                    report.retried += 1
                else:
                    row.status, row.params = FAILED, None
                    row.error_category = category.value
                    row.error_message = f"{message} (after {row.attempts} attempt(s))"
                    report.failed += 1
                    report.woken.add(row.document_id)
            row.updated_at = datetime.now(UTC)

    def _succeeded(self, session: Session, row: BatchRequest, reply: ProviderReply) -> None:
        schema_name = session.execute(
            select(Document.schema_name).where(Document.id == row.document_id)
        ).scalar_one()
        # Judged as the extract stage will judge it, so the row's outcome is final now.
        outcome, category, problem = CallOutcome.OK, None, None
        if reply.truncated:
            outcome, category = CallOutcome.TRUNCATED, ErrorCategory.TRUNCATED_OUTPUT
            problem = "output hit the token limit; not used"
        else:
            checked = validate(get_schema(schema_name), reply.data)
            if not checked.ok:
                outcome, category = CallOutcome.INVALID_OUTPUT, ErrorCategory.INVALID_OUTPUT
                problem = "; ".join(([reply.problem] if reply.problem else []) + checked.errors)
        self._finish_call(session, row, reply, category, problem, outcome)
        row.status, row.params = SUCCEEDED, None
        row.result = {
            "data": reply.data,
            "usage": {
                "input_tokens": reply.usage.input_tokens,
                "output_tokens": reply.usage.output_tokens,
                "cache_creation_input_tokens": reply.usage.cache_creation_input_tokens,
                "cache_read_input_tokens": reply.usage.cache_read_input_tokens,
                "service_tier": reply.usage.service_tier,
            },
            "request_id": reply.request_id,
            "stop_reason": reply.stop_reason,
            "truncated": reply.truncated,
            "problem": reply.problem,
        }

    def _finish_call(
        self,
        session: Session,
        row: BatchRequest,
        reply: ProviderReply | None,
        category: ErrorCategory | None,
        message: str | None,
        outcome: CallOutcome = CallOutcome.ERROR,
    ) -> None:
        """Give the submission's `started` row its outcome: priced at the batch rate with the
        prices in force when it was submitted; an error, expiry or refusal is not billed."""
        started = session.execute(
            select(VlmCall.created_at, VlmCall.budget_ledger_ids, VlmCall.attempt).where(
                VlmCall.call_id == row.call_id
            )
        ).one_or_none()
        ran_at = started.created_at if started is not None else datetime.now(UTC)
        usage = reply.usage if reply is not None else Usage(service_tier=BATCH_TIER)
        if usage.service_tier is None:
            usage.service_tier = BATCH_TIER
        cost = self.prices.cost(row.provider, row.model, usage, ran_at) if reply else Decimal(0)
        savings = Savings()
        if reply is not None and cost is not None:
            standard = self.prices.cost(
                row.provider,
                row.model,
                Usage(
                    input_tokens=usage.input_tokens,
                    output_tokens=usage.output_tokens,
                    cache_creation_input_tokens=usage.cache_creation_input_tokens,
                    cache_read_input_tokens=usage.cache_read_input_tokens,
                ),
                ran_at,
            )
            savings.batch = (standard or cost) - cost
        record = CallRecord(
            provider=row.provider,
            model=row.model,
            attempt=started.attempt if started is not None else row.attempts,
            outcome=outcome,
            latency_ms=int((datetime.now(UTC) - ran_at).total_seconds() * 1000),
            usage=usage,
            cost_usd=cost,
            request_id=reply.request_id if reply else None,
            stop_reason=reply.stop_reason if reply else None,
            error_category=category.value if category else None,
            error_message=message[:2000] if message else None,
            page_indexes=list(row.page_indexes),
            call_id=row.call_id or uuid.uuid4(),
            purpose=CallPurpose(row.purpose),
            estimated_input_tokens=row.estimated_input_tokens,
            estimated_cost_usd=row.estimated_cost_usd,
            savings=savings,
            budget_ledger_ids=list(started.budget_ledger_ids) if started is not None else [],
        )
        repo.record_calls(session, row.document_id, [record])


def pending_count(session: Session) -> dict[str, int]:
    """Batch requests by state (for `pagemill costs` and status pages)."""
    rows = session.execute(
        text("SELECT status, count(*) FROM batch_requests GROUP BY status")
    ).all()
    return {str(status): int(count) for status, count in rows}
