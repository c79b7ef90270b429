"""Model-call rows (vlm_calls): written `started` before the request, again with the outcome."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Sequence

from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.orm import Session
from sqlalchemy.sql.dml import ReturningInsert

from pipeline import metrics
from pipeline.db.tables import CALLS
from pipeline.domain import CallOutcome, CallRecord


def record_calls(session: Session, document_id: int | None, calls: Sequence[CallRecord]) -> None:
    """One vlm_calls row per call, in one statement. A call's row is written `started` before
    its request and once more with the outcome; writing a finished call again is a no-op."""
    if not calls:
        return
    rows = [
        {
            "call_id": call.call_id,
            "document_id": document_id,
            "provider": call.provider,
            "model": call.model,
            "request_id": call.request_id,
            "attempt": call.attempt,
            "page_indexes": call.page_indexes,
            "input_tokens": call.usage.input_tokens,
            "output_tokens": call.usage.output_tokens,
            "cache_creation_input_tokens": call.usage.cache_creation_input_tokens,
            "cache_read_input_tokens": call.usage.cache_read_input_tokens,
            "service_tier": call.usage.service_tier,
            "cost_usd": call.cost_usd,
            "latency_ms": call.latency_ms,
            "outcome": call.outcome.value,
            "stop_reason": call.stop_reason,
            "error_category": call.error_category,
            "error_message": call.error_message,
            "purpose": call.purpose.value,
            "estimated_input_tokens": call.estimated_input_tokens,
            "estimated_cost_usd": call.estimated_cost_usd,
            "cached_from_call_id": call.cached_from_call_id,
            "prompt_cache_marked": call.prompt_cache_marked,
            "saved_page_cache_usd": call.savings.page_cache,
            "saved_cascade_usd": call.savings.cascade,
            "saved_batch_usd": call.savings.batch,
            "saved_prompt_cache_usd": call.savings.prompt_cache,
            "budget_ledger_ids": call.budget_ledger_ids,
        }
        for call in calls
    ]
    written = set(session.execute(_record_calls_statement(), rows).scalars())
    metrics.after_commit(
        session, metrics.calls_recorded, [c for c in calls if c.call_id in written]
    )


@functools.cache
def _record_calls_statement() -> ReturningInsert[tuple[uuid.UUID]]:
    stmt = insert(CALLS)
    outcome = {
        name: stmt.excluded[name]
        for name in (
            "request_id",
            "input_tokens",
            "output_tokens",
            "cache_creation_input_tokens",
            "cache_read_input_tokens",
            "service_tier",
            "cost_usd",
            "latency_ms",
            "outcome",
            "stop_reason",
            "error_category",
            "error_message",
            "saved_page_cache_usd",
            "saved_cascade_usd",
            "saved_batch_usd",
            "saved_prompt_cache_usd",
        )
    }
    # A `started` row (written before the request) takes the outcome; a finished one is final.
    # RETURNING names the rows written (a finished call written again is not), for metrics.
    return stmt.on_conflict_do_update(
        index_elements=["call_id"],
        set_=outcome,
        where=CALLS.c.outcome == CallOutcome.STARTED.value,
    ).returning(CALLS.c.call_id)
