"""Document tasks: the prepare stage (CPU queue) and the extract stage (I/O queue)."""

from __future__ import annotations

import logging

from kombu.exceptions import OperationalError as BrokerError
from sqlalchemy.orm import Session, sessionmaker

from pipeline import health
from pipeline.db.session import transaction
from pipeline.domain import DocumentStatus, Stage
from pipeline.health import HEALTH
from pipeline.usecases import process, waiting
from workers import queues
from workers.policy import document_task
from workers.runtime import collaborators

log = logging.getLogger(__name__)


@document_task(name="pagemill.prepare_document", queue=queues.PREPARE)
def prepare_document(document_id: int, task_id: str) -> DocumentStatus | Stage | None:
    outcome = process.prepare_document(collaborators(), int(document_id), task_id)
    if outcome is Stage.EXTRACT:
        nudge(document_id, Stage.EXTRACT)
    return outcome


@document_task(name="pagemill.extract_document", queue=queues.EXTRACT)
def extract_document(document_id: int, task_id: str) -> DocumentStatus | None:
    return process.extract_document(collaborators(), int(document_id), task_id)


_TASKS = {
    Stage.PREPARE: (prepare_document, queues.PREPARE),
    Stage.EXTRACT: (extract_document, queues.EXTRACT),
}


def enqueue_document(document_id: int, stage: Stage | str = Stage.PREPARE) -> None:
    """The nudge: a message carrying only the id. Postgres holds everything else."""
    task, queue = _TASKS[Stage(stage)]
    task.apply_async(args=[document_id], queue=queue)


def nudge(
    document_id: int,
    stage: Stage | str = Stage.PREPARE,
    sessions: sessionmaker[Session] | None = None,
) -> bool:
    """Enqueue the pending document; when the broker is down, record in Postgres that its
    nudge is owed (pipeline/usecases/waiting.py: `mark_due`), so that the sweep sends it once
    the broker is back. True when the message went out."""
    try:
        enqueue_document(document_id, stage)
    except (BrokerError, ConnectionError, TimeoutError) as exc:
        if not HEALTH.down(health.BROKER, str(exc)):
            log.debug("document %s: broker down; the sweep will enqueue it", document_id)
        with transaction(sessions or collaborators().sessions) as session:
            waiting.mark_due(session, document_id, "broker_unavailable")
        return False
    return True
