"""Document tasks."""

from __future__ import annotations

from pipeline.domain import DocumentStatus
from pipeline.usecases.process import process_document as run_document
from workers import queues
from workers.policy import document_task
from workers.runtime import collaborators


@document_task(name="pagemill.process_document", queue=queues.DOCUMENTS)
def process_document(document_id: int) -> DocumentStatus | None:
    return run_document(collaborators(), int(document_id))


def enqueue_document(document_id: int) -> None:
    """The nudge: a message carrying only the id. Postgres holds everything else."""
    process_document.apply_async(args=[document_id], queue=queues.DOCUMENTS)
