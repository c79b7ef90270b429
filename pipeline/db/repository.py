"""Repository: the one name to import for database reads and writes (`repo.claim_document`).

Every write is an idempotent statement (INSERT … ON CONFLICT, guarded UPDATE). The statements
live by concern, and this module re-exports them all:

- pipeline/db/documents.py: register, claim, source facts, advance, finish, release, dead letters
- pipeline/db/page_store.py: page rows and payloads, loaded back whole or as words only
- pipeline/db/checkpoints.py: chunk answers saved for a retry
- pipeline/db/calls.py: model-call rows
- pipeline/db/results.py: extraction results and the results listing
- pipeline/db/tables.py: the Core tables the hot-path statements are built on
"""

from pipeline.db.calls import record_calls
from pipeline.db.checkpoints import load_checkpoints, save_checkpoint
from pipeline.db.documents import (
    CLAIM_SLACK,
    ClaimedDocument,
    SourceFacts,
    add_dead_letter,
    advance_stage,
    claim_document,
    finish_document,
    record_source,
    register_document,
    release_for_retry,
)
from pipeline.db.page_store import iter_page_words, load_pages, record_pages, store_payloads
from pipeline.db.results import ResultRow, list_results, save_extraction, valid_extraction

__all__ = [
    "CLAIM_SLACK",
    "ClaimedDocument",
    "ResultRow",
    "SourceFacts",
    "add_dead_letter",
    "advance_stage",
    "claim_document",
    "finish_document",
    "iter_page_words",
    "list_results",
    "load_checkpoints",
    "load_pages",
    "record_calls",
    "record_pages",
    "record_source",
    "register_document",
    "release_for_retry",
    "save_checkpoint",
    "save_extraction",
    "store_payloads",
    "valid_extraction",
]
