"""Queue names, in one place."""

DOCUMENTS = "documents"  # process one document: download, split, extract, store
MAINTENANCE = "maintenance"  # periodic sweeps and reconciliation
DEAD_LETTER = "dead_letter"  # a copy of every dead letter; no worker consumes it (Postgres is truth)

CONSUMED = (DOCUMENTS, MAINTENANCE)
