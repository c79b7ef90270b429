"""Browsing documents: the filtered, paged list and everything known about one document."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session

from pipeline import storage
from pipeline.domain import ObjectRef
from pipeline.errors import PipelineError
from pipeline.pages import Limits, open_document
from pipeline.schemas import get_schema

PAGE_SIZE = 50


@dataclass(frozen=True, slots=True)
class DocumentFilter:
    status: str | None = None
    schema_name: str | None = None
    bucket: str | None = None
    prefix: str | None = None  # key prefix
    error_category: str | None = None
    stage: str | None = None
    since: date | None = None  # created on or after (UTC)
    until: date | None = None  # created on or before (UTC)
    search: str | None = None  # key prefix, whole key, or invoice number
    before_id: int | None = None  # keyset pagination: ids below this one

    def params(self) -> dict[str, str]:
        """The filter as query parameters (for links to the next page)."""
        values = {
            "status": self.status,
            "schema": self.schema_name,
            "bucket": self.bucket,
            "prefix": self.prefix,
            "error": self.error_category,
            "stage": self.stage,
            "since": self.since.isoformat() if self.since else None,
            "until": self.until.isoformat() if self.until else None,
            "q": self.search,
        }
        return {k: v for k, v in values.items() if v}


@dataclass(frozen=True, slots=True)
class DocumentRow:
    id: int
    bucket: str
    key: str
    status: str
    stage: str
    schema_name: str
    page_count: int | None
    error_category: str | None
    created_at: datetime
    finished_at: datetime | None
    invoice_number: str | None
    total: str | None
    currency: str | None
    cost_usd: Decimal
    calls: int


def _like_prefix(value: str) -> str:
    return re.sub(r"([\\%_])", r"\\\1", value) + "%"


def list_documents(
    session: Session, filters: DocumentFilter, *, limit: int = PAGE_SIZE
) -> tuple[list[DocumentRow], int | None]:
    """One page of documents, newest first, and the id to continue from (None: last page)."""
    where = ["TRUE"]
    params: dict[str, Any] = {"limit": limit + 1}
    if filters.status:
        where.append("d.status = :status")
        params["status"] = filters.status
    if filters.schema_name:
        where.append("d.schema_name = :schema")
        params["schema"] = filters.schema_name
    if filters.stage:
        where.append("d.stage = :stage")
        params["stage"] = filters.stage
    if filters.bucket:
        where.append("d.bucket = :bucket")
        params["bucket"] = filters.bucket
    if filters.prefix:
        where.append("d.key LIKE :prefix")
        params["prefix"] = _like_prefix(filters.prefix)
    if filters.error_category:
        where.append("d.error_category = :error")
        params["error"] = filters.error_category
    if filters.since:
        where.append("d.created_at >= :since")
        params["since"] = datetime.combine(filters.since, datetime.min.time())
    if filters.until:
        where.append("d.created_at < :until")
        params["until"] = datetime.combine(filters.until + timedelta(days=1), datetime.min.time())
    # Newest first. With a date range, by creation time (the range's index gives the order);
    # otherwise by id, the same order without a sort.
    by_time = filters.since is not None or filters.until is not None
    order = "d.created_at DESC, d.id DESC" if by_time else "d.id DESC"
    if not by_time and _few_key_matches(session, filters):
        # Walking the id index backwards for the newest matches would read every newer row
        # when the matches are old (a day's folder): fetch them by key, then sort them.
        order = "d.id + 0 DESC"
    if filters.before_id:
        where.append(
            "(d.created_at, d.id) < (SELECT created_at, id FROM documents WHERE id = :before)"
            if by_time
            else "d.id < :before"
        )
        params["before"] = filters.before_id
    if filters.search:
        term = filters.search.strip()
        # Each branch has its own index: key prefix, whole key, invoice number.
        where.append(
            """d.id IN (SELECT id FROM documents WHERE key LIKE :q_prefix
                        UNION SELECT document_id FROM extractions
                               WHERE data->>'invoice_number' = :q)"""
        )
        params["q"] = term
        params["q_prefix"] = _like_prefix(term)
    # The page's ids first (narrow rows: index scans), then the rest only for those rows.
    sql = f"""
        SELECT d.id, d.bucket, d.key, d.status, d.stage, d.schema_name, d.page_count,
               d.error_category, d.created_at, d.finished_at,
               e.data->>'invoice_number' AS invoice_number, e.data->>'total' AS total,
               e.data->>'currency' AS currency,
               coalesce(c.cost_usd, 0) AS cost_usd, coalesce(c.calls, 0) AS calls
          FROM (SELECT d.id FROM documents d
                 WHERE {" AND ".join(where)}
                 ORDER BY {order}
                 LIMIT :limit) page
          JOIN documents d ON d.id = page.id
          LEFT JOIN extractions e ON e.document_id = d.id AND e.schema_name = d.schema_name
          LEFT JOIN LATERAL (
                SELECT sum(v.cost_usd) AS cost_usd, count(*) AS calls
                  FROM vlm_calls v WHERE v.document_id = d.id) c ON TRUE
         ORDER BY {order.replace(" + 0", "")}
    """  # only fixed fragments are joined above; every value is a bound parameter
    rows = [DocumentRow(**dict(r)) for r in session.execute(text(sql), params).mappings()]
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


SELECTIVE_KEY_MATCHES = 20_000


def _few_key_matches(session: Session, filters: DocumentFilter) -> bool:
    """Whether a key prefix (filter or search) matches few enough documents to sort them all;
    counted on the key index, stopping at the threshold."""
    prefixes = [p for p in (filters.prefix, filters.search) if p]
    if not prefixes:
        return False
    matches = session.execute(
        text("SELECT count(*) FROM (SELECT 1 FROM documents WHERE key LIKE :prefix LIMIT :cap) m"),
        {"prefix": _like_prefix(min(prefixes, key=len)), "cap": SELECTIVE_KEY_MATCHES},
    ).scalar_one()
    return int(matches) < SELECTIVE_KEY_MATCHES


def filter_choices(session: Session) -> dict[str, list[str]]:
    """Values offered in the filter menus (statuses and schemas seen)."""
    schemas = session.execute(
        text(
            # A loose index scan: one probe per distinct schema, not a scan of every document.
            """
            WITH RECURSIVE s(name) AS (
                SELECT min(schema_name) FROM documents
                UNION ALL
                SELECT (SELECT min(schema_name) FROM documents WHERE schema_name > s.name)
                  FROM s WHERE s.name IS NOT NULL)
            SELECT name FROM s WHERE name IS NOT NULL
            """
        )
    ).scalars()
    return {
        "statuses": ["pending", "processing", "done", "needs_review", "failed"],
        "schemas": list(schemas),
    }


@dataclass(slots=True)
class PageView:
    index: int
    width_pt: float
    height_pt: float
    pixel_width: int
    pixel_height: int
    status: str
    has_payload: bool
    boxes: list[dict[str, Any]] = field(default_factory=list)  # field, value, bbox, text


@dataclass(slots=True)
class DocumentDetail:
    document: dict[str, Any]
    extraction: dict[str, Any] | None
    pages: list[PageView]
    fields: list[dict[str, Any]]  # path, value, grounded (bool | None), page, doubtful
    ungrounded: list[str]
    calls: list[dict[str, Any]]
    events: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    corrections: list[dict[str, Any]]

    def mark_doubtful(self, paths: set[str]) -> None:
        """Flag the values a reviewer should look at (fields and their boxes)."""
        for row in self.fields:
            row["doubtful"] = row["path"] in paths
        for page in self.pages:
            for box in page.boxes:
                box["doubtful"] = box["field"] in paths

    @property
    def cost_usd(self) -> Decimal:
        return sum((c["cost_usd"] for c in self.calls if c["cost_usd"] is not None), Decimal(0))

    @property
    def unpriced_calls(self) -> int:
        return sum(1 for c in self.calls if c["cost_usd"] is None)


def flatten(data: dict[str, Any] | None) -> list[tuple[str, Any]]:
    """(path, value) of every scalar in an extraction, in the paths grounding uses
    ("total", "line_items[2].amount")."""
    out: list[tuple[str, Any]] = []

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, inner in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), inner)
        elif isinstance(value, list):
            for n, inner in enumerate(value):
                walk(f"{prefix}[{n}]", inner)
        else:
            out.append((prefix, value))

    walk("", data or {})
    return out


def _rows(session: Session, sql: str, **params: Any) -> list[dict[str, Any]]:
    return [dict(r) for r in session.execute(text(sql), params).mappings()]


def _field_order(schema_name: str) -> dict[str, int]:
    """Top-level fields in the schema's order (JSONB keeps no key order)."""
    try:
        model = get_schema(schema_name).model
    except PipelineError:
        return {}
    return {name: n for n, name in enumerate(model.model_fields)}


def load_document(session: Session, document_id: int) -> DocumentDetail | None:
    docs = _rows(session, "SELECT * FROM documents WHERE id = :id", id=document_id)
    if not docs:
        return None
    doc = docs[0]
    extractions = _rows(
        session,
        "SELECT * FROM extractions WHERE document_id = :id AND schema_name = :schema",
        id=document_id,
        schema=doc["schema_name"],
    )
    extraction = extractions[0] if extractions else None
    grounding: dict[str, Any] = (extraction or {}).get("grounding") or {}
    pages = [
        PageView(
            index=r["page_index"],
            width_pt=r["width_pt"] or (r["pixel_width"] * 72.0 / (r["render_dpi"] or 72.0)),
            height_pt=r["height_pt"] or (r["pixel_height"] * 72.0 / (r["render_dpi"] or 72.0)),
            pixel_width=r["pixel_width"],
            pixel_height=r["pixel_height"],
            status=r["status"],
            has_payload=r["has_payload"],
        )
        for r in _rows(
            session,
            """
            SELECT p.page_index, p.pixel_width, p.pixel_height, p.render_dpi, p.status,
                   pp.width_pt, pp.height_pt, pp.document_id IS NOT NULL AS has_payload
              FROM pages p
              LEFT JOIN page_payloads pp
                     ON pp.document_id = p.document_id AND pp.page_index = p.page_index
             WHERE p.document_id = :id
             ORDER BY p.page_index
            """,
            id=document_id,
        )
    ]
    by_index = {p.index: p for p in pages}
    fields: list[dict[str, Any]] = []
    for path, value in flatten((extraction or {}).get("data")):
        found = grounding.get(path)
        where = found if isinstance(found, dict) else None
        fields.append(
            {
                "path": path,
                "value": value,
                "grounded": (where is not None) if found is not None else None,
                "page": where["page"] if where is not None else None,
                "doubtful": False,
            }
        )
        if where is not None and where["page"] in by_index:
            by_index[where["page"]].boxes.append(
                {
                    "field": path,
                    "value": value,
                    "bbox": where["bbox"],
                    "text": where.get("text"),
                    "doubtful": False,
                }
            )
    order = _field_order(doc["schema_name"])
    fields.sort(key=lambda f: order.get(re.split(r"[.\[]", f["path"], maxsplit=1)[0], len(order)))
    calls = _rows(
        session,
        """
        SELECT id, provider, model, request_id, attempt, page_indexes, input_tokens,
               output_tokens, cache_creation_input_tokens, cache_read_input_tokens, cost_usd,
               latency_ms, outcome, stop_reason, error_category, error_message, created_at
          FROM vlm_calls WHERE document_id = :id ORDER BY id
        """,
        id=document_id,
    )
    events = _rows(
        session,
        "SELECT * FROM document_events WHERE document_id = :id ORDER BY id",
        id=document_id,
    )
    letters = _rows(
        session, "SELECT * FROM dead_letters WHERE document_id = :id ORDER BY id", id=document_id
    )
    corrections = _rows(
        session,
        "SELECT * FROM review_corrections WHERE document_id = :id ORDER BY id",
        id=document_id,
    )
    return DocumentDetail(
        document=doc,
        extraction=extraction,
        pages=pages,
        fields=fields,
        ungrounded=[p for p, where in grounding.items() if where == "ungrounded"],
        calls=calls,
        events=events,
        dead_letters=letters,
        corrections=corrections,
    )


@dataclass(frozen=True, slots=True)
class PageImage:
    data: bytes
    media_type: str
    source: str  # "stored" (the page payload) or "bucket" (rendered from the object now)


def page_image(
    session: Session, s3: Any, document_id: int, index: int, *, max_bytes: int, limits: Limits
) -> PageImage | str:
    """The page as the extract stage saw it (its stored payload) or, once the payload is gone
    (retention, or an offline extraction that stored none), rendered from the bucket object.
    A string says why there is no image."""
    payload = session.execute(
        text(
            "SELECT image, media_type FROM page_payloads"
            " WHERE document_id = :id AND page_index = :index"
        ),
        {"id": document_id, "index": index},
    ).one_or_none()
    if payload is not None and payload.image:
        return PageImage(bytes(payload.image), payload.media_type, "stored")
    row = session.execute(
        text("SELECT bucket, key, version, page_count FROM documents WHERE id = :id"),
        {"id": document_id},
    ).one_or_none()
    if row is None:
        return "no such document"
    if row.page_count is not None and not 0 <= index < row.page_count:
        return "no such page"
    ref = ObjectRef(bucket=row.bucket, key=row.key, version=row.version)
    try:
        data = storage.download(s3, ref, max_bytes)
        source = open_document(data, limits)
        try:
            if not 0 <= index < source.page_count:
                return "no such page"
            page = source.page(index)
        finally:
            source.close()
    except PipelineError as exc:
        return f"the image expired and the object cannot be read: {exc.message}"
    return PageImage(page.image, page.media_type, "bucket")
