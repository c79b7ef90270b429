"""A document's answered chunks: their page-cache entries, and what a cascade escalation redoes."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from pipeline.checks import RuleFailure
from pipeline.cost import page_cache
from pipeline.db.session import transaction
from pipeline.domain import CallOutcome, CallPurpose, CallRecord
from pipeline.schemas import SchemaSpec
from pipeline.usecases.extract import ChunkStore

# The lines keep the logger name they had when this was part of control.py: log queries
# select cost control's lines by it.
log = logging.getLogger("pipeline.cost.control")


@dataclass(slots=True)
class AnsweredChunk:
    """One chunk of a document's answer, and where its calls are in the meter."""

    indexes: tuple[int, ...]
    data: dict[str, Any]
    first_call: int  # meter.calls[first_call:last_call] are the calls it took
    last_call: int
    key: str | None = None  # its page-cache key
    label: str = ""  # the model plan in its key


def store_answer(
    sessions: sessionmaker[Session],
    schema: SchemaSpec,
    document_id: int,
    chunk: AnsweredChunk,
    data: dict[str, Any],
    calls: list[CallRecord],
    *,
    final: bool,
) -> None:
    """The chunk's answer into the page cache, when a call of the plan in its key paid for it."""
    paid = [c for c in calls if c.purpose is not CallPurpose.CACHE_HIT]
    answered = [c for c in paid if c.outcome is CallOutcome.OK]
    if not answered:
        return
    if any(c.model not in chunk.label.split(">") for c in answered):
        return  # a failover secondary's answer is not what the key promises
    costs = [c.cost_usd for c in paid]
    cost = None if any(c is None for c in costs) else sum((c for c in costs if c), Decimal(0))
    if chunk.key is None:
        return
    with best_effort("storing a page-cache entry"), transaction(sessions) as session:
        page_cache.store(
            session,
            key=chunk.key,
            schema=schema,
            provider=answered[-1].provider,
            plan=chunk.label,
            data=data,
            final=final,
            source_call_id=answered[-1].call_id,
            document_id=document_id,
            cost_usd=cost,
        )


def mark_cascade_overhead(sessions: sessionmaker[Session], calls: list[CallRecord]) -> None:
    """The cheap answers of escalated chunks saved nothing: their rows' cascade saving is
    their cost, negative."""
    # Rows already final (written before this point) get the correction too.
    if not calls:
        return
    with best_effort("correcting cascade savings"), transaction(sessions) as session:
        session.execute(
            text(
                "UPDATE vlm_calls SET saved_cascade_usd = -coalesce(cost_usd, 0)"
                " WHERE call_id = ANY(:ids) AND outcome <> 'started'"
            ),
            {"ids": [c.call_id for c in calls]},
        )


@dataclass(frozen=True, slots=True)
class EscalationStore:
    """The chunks an escalation keeps (their answers passed) and the ones it asks again: a
    range holding a failing page (every range when the failure cannot be placed) reads as
    unanswered; a new answer is checkpointed as usual."""

    base: ChunkStore | None
    failing: set[int] | None
    kept: dict[tuple[int, int], dict[str, Any]]

    def load(self, first: int, stop: int) -> dict[str, Any] | None:
        if self.failing is None or any(first <= page < stop for page in self.failing):
            return None
        found = self.kept.get((first, stop))
        if found is None and self.base is not None:
            found = self.base.load(first, stop)
        return found

    def save(self, first: int, stop: int, record: dict[str, Any]) -> None:
        if self.base is not None:
            self.base.save(first, stop, record)


@contextmanager
def best_effort(what: str) -> Iterator[None]:
    """A write that must never cost an answer that arrived (the page cache, a savings figure,
    a wake-up): a database that is down skips it, with one log line."""
    try:
        yield
    except SQLAlchemyError as exc:
        log.warning("%s skipped: %s", what, " ".join(str(exc).split())[:200])


def failing_pages(
    failures: list[RuleFailure], grounding: dict[str, Any], ungrounded: list[str]
) -> set[int] | None:
    """Pages holding the values that failed; None when a failure cannot be placed on a page
    (an ungrounded value, or a rule about values found nowhere): then every chunk goes."""
    if ungrounded:
        return None
    fields = {f.split("[", 1)[0] for failure in failures for f in failure.fields}
    pages: set[int] = set()
    for path, where in grounding.items():
        top = path.split("[", 1)[0].split(".", 1)[0]
        if top in fields and isinstance(where, dict) and "page" in where:
            pages.add(int(where["page"]))
    return pages or None
