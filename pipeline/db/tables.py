"""The Core tables behind the ORM models, for hot-path statements built once."""

from __future__ import annotations

from typing import cast

from sqlalchemy import Table

from pipeline.db.models import ChunkResult, Document, Extraction, Page, PagePayload, VlmCall

# The tables behind the models: hot-path statements run as Core, without the ORM's bookkeeping,
# and are built once with bound parameters (building and cache-keying a statement per call cost
# more CPU than running it).
DOCUMENTS = cast(Table, Document.__table__)
PAGES = cast(Table, Page.__table__)
PAYLOADS = cast(Table, PagePayload.__table__)
CALLS = cast(Table, VlmCall.__table__)
EXTRACTIONS = cast(Table, Extraction.__table__)
CHUNKS = cast(Table, ChunkResult.__table__)
