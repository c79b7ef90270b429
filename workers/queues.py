"""Queue names, in one place."""

# CPU work: download, split, render, OCR (and the offline extractor). Prefork pool.
PREPARE = "prepare"
# Model calls: I/O-bound, hundreds in flight. Threads pool.
EXTRACT = "extract"
# Periodic sweep and reconciliation.
MAINTENANCE = "maintenance"
# A copy of every dead letter; no worker consumes it (Postgres is the source of truth).
DEAD_LETTER = "dead_letter"

CONSUMED = (PREPARE, EXTRACT, MAINTENANCE)
