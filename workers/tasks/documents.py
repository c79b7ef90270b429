"""Document tasks: the prepare stage (CPU queue) and the extract stage (I/O queue)."""

from __future__ import annotations

from pipeline.domain import DocumentStatus, Stage
from pipeline.usecases import process
from workers import queues
from workers.policy import document_task
from workers.runtime import collaborators


@document_task(name="pagemill.prepare_document", queue=queues.PREPARE)
def prepare_document(document_id: int, task_id: str) -> DocumentStatus | Stage | None:
    outcome = process.prepare_document(collaborators(), int(document_id), task_id)
    if outcome is Stage.EXTRACT:
        enqueue_document(document_id, Stage.EXTRACT)
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
