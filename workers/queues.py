"""Queue names, in one place."""

# CPU work: download, split, render, OCR (and the offline extractor). Prefork pool.
PREPARE = "prepare"
# Model calls: I/O-bound, hundreds in flight. Threads pool.
EXTRACT = "extract"
# Periodic sweep, reconciliation and retention. Dead letters are rows in Postgres only.
MAINTENANCE = "maintenance"

CONSUMED = (PREPARE, EXTRACT, MAINTENANCE)

# Which queue each task goes to (Celery's task_routes): the tasks themselves name no queue.
ROUTES = {
    "pagemill.prepare_document": {"queue": PREPARE},
    "pagemill.extract_document": {"queue": EXTRACT},
    "pagemill.sweep": {"queue": MAINTENANCE},
    "pagemill.reconcile": {"queue": MAINTENANCE},
    "pagemill.ops_rollup": {"queue": MAINTENANCE},
    "pagemill.retention": {"queue": MAINTENANCE},
    "pagemill.batches": {"queue": MAINTENANCE},
}
