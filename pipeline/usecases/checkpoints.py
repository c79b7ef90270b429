"""Chunk answers kept in the database as they arrive, and the patient write of what was paid for."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from sqlalchemy.orm import Session

from pipeline.db import repository as repo
from pipeline.db.session import UNAVAILABLE, patiently
from pipeline.usecases.extract import Meter

if TYPE_CHECKING:
    from pipeline.usecases.process import Claimed, Collaborators

# The lines keep the logger name they had when this was part of process.py: log queries
# and tests select a stage's lines by it.
log = logging.getLogger("pipeline.usecases.process")


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

        keep_paid_for(self.deps, write, self.deadline, self.document_id)
        self._calls_written += len(calls)
        for key in unwritten:
            self._unwritten.pop(key, None)


def keep_paid_for(
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
