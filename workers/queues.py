"""Queue names, in one place."""

# CPU work: download, split, render, OCR (and the offline extractor). Prefork pool.
PREPARE = "prepare"
# Model calls: I/O-bound, hundreds in flight. Threads pool.
EXTRACT = "extract"
# Periodic sweep, reconciliation and retention. Dead letters are rows in Postgres only.
MAINTENANCE = "maintenance"

CONSUMED = (PREPARE, EXTRACT, MAINTENANCE)
