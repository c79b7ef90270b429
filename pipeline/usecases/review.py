"""Human review: which values are doubtful, a reviewer's verdict on them, and reviewed documents
exported as ground truth in the layout `pagemill eval` reads (DIR/gt/*.json + DIR/docs/)."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import select, text, update
from sqlalchemy.orm import Session

from pipeline import storage
from pipeline.checks import run_rules
from pipeline.db.models import Document, Extraction, ReviewCorrection
from pipeline.domain import DocumentStatus, ObjectRef
from pipeline.errors import PipelineError
from pipeline.evaluation import SCORED_FIELDS, predicted_value
from pipeline.schemas import get_schema
from pipeline.usecases.browse import flatten
from pipeline.validation import validate

MAX_REVIEWER_CHARS = 100


class ReviewError(Exception):
    """The review cannot be stored; the message says why, for the reviewer."""


class ReviewConflict(ReviewError):
    """The document is not waiting for review (any more)."""


class ReviewInvalid(ReviewError):
    """The corrected record does not validate against its schema."""

    def __init__(self, errors: list[str]) -> None:
        super().__init__("; ".join(errors))
        self.errors = errors


def doubtful_fields(
    schema_name: str, data: dict[str, Any] | None, grounding: dict[str, Any] | None
) -> dict[str, list[str]]:
    """Path -> why it is doubtful: not found on any page, or named by a business rule that
    fails (a rule on a list, like line items, makes each of its values doubtful)."""
    if not data:
        return {}
    paths = [path for path, _ in flatten(data)]
    doubtful: dict[str, list[str]] = {}
    for path, where in (grounding or {}).items():
        if where == "ungrounded":
            doubtful.setdefault(path, []).append("not found on any page")
    try:
        rules = get_schema(schema_name).rules
    except PipelineError:
        rules = ()
    for failure in run_rules(rules, data):
        for name in failure.fields:
            for path in paths:
                if path == name or path.startswith((f"{name}[", f"{name}.")):
                    doubtful.setdefault(path, []).append(failure.message)
    return doubtful


_PATH_PART = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def _set_path(data: dict[str, Any], path: str, value: Any) -> None:
    parts: list[str | int] = [
        int(index) if index else name for name, index in _PATH_PART.findall(path)
    ]
    target: Any = data
    for part in parts[:-1]:
        target = target[part]
    target[parts[-1]] = value


def _get_path(data: dict[str, Any], path: str) -> Any:
    target: Any = data
    for name, index in _PATH_PART.findall(path):
        target = target[int(index)] if index else target[name]
    return target


def _shown(value: Any) -> str:
    """A value as the review form shows it (and as an unchanged answer comes back)."""
    return "" if value is None else str(value)


@dataclass(frozen=True, slots=True)
class ReviewOutcome:
    document_id: int
    corrected: list[str]
    accepted: list[str]


def apply_review(
    session: Session, document_id: int, reviewer: str, answers: dict[str, str]
) -> ReviewOutcome:
    """Store the reviewer's verdict in the caller's transaction: each changed value becomes a
    correction (the original kept beside it), each doubtful value left as it was an
    acceptance; the extraction takes the corrected values, and the document moves on
    (needs_review -> done, an event naming the reviewer).

    `answers` maps field paths to what the reviewer typed ("" = no value); paths not given
    are kept as extracted."""
    reviewer = " ".join(reviewer.split())[:MAX_REVIEWER_CHARS]
    if not reviewer:
        raise ReviewError("say who you are: the reviewer's name is stored with each verdict")
    doc = session.execute(
        select(Document).where(Document.id == document_id).with_for_update()
    ).scalar_one_or_none()
    if doc is None:
        raise ReviewConflict(f"no document {document_id}")
    if doc.status != DocumentStatus.NEEDS_REVIEW.value:
        raise ReviewConflict(f"document {document_id} is {doc.status}, not waiting for review")
    extraction = session.execute(
        select(Extraction).where(
            Extraction.document_id == document_id,
            Extraction.schema_name == doc.schema_name,
            Extraction.valid.is_(True),
        )
    ).scalar_one_or_none()
    if extraction is None or extraction.data is None:
        raise ReviewConflict(f"document {document_id} has no valid extraction to review")
    original = extraction.data
    doubtful = doubtful_fields(doc.schema_name, original, extraction.grounding)
    edited = copy.deepcopy(original)
    changed: list[str] = []
    for path, value in flatten(original):
        if path not in answers:
            continue
        answer = answers[path].strip()
        if answer != _shown(value).strip():
            _set_path(edited, path, answer or None)
            changed.append(path)
    checked = validate(get_schema(doc.schema_name), edited)
    if not checked.ok:
        raise ReviewInvalid(checked.errors)
    final = checked.data()
    accepted = [p for p in doubtful if p not in changed and p in answers]
    rows = [
        ReviewCorrection(
            document_id=document_id,
            schema_name=doc.schema_name,
            field=path,
            action="corrected",
            original=_get_path(original, path),
            corrected=_get_path(final, path),
            reason="; ".join(doubtful.get(path, [])) or None,
            reviewer=reviewer,
        )
        for path in changed
    ] + [
        ReviewCorrection(
            document_id=document_id,
            schema_name=doc.schema_name,
            field=path,
            action="accepted",
            original=_get_path(original, path),
            corrected=None,
            reason="; ".join(doubtful[path]),
            reviewer=reviewer,
        )
        for path in accepted
    ]
    session.add_all(rows)
    session.execute(
        update(Extraction)
        .where(Extraction.id == extraction.id)
        .values(data=final, updated_at=text("now()"))
    )
    # The trigger that records the state change names the reviewer as its actor.
    session.execute(
        text("SELECT set_config('pagemill.actor', :actor, true)"), {"actor": f"review:{reviewer}"}
    )
    session.execute(
        update(Document)
        .where(Document.id == document_id)
        .values(status=DocumentStatus.DONE.value, updated_at=text("now()"))
    )
    return ReviewOutcome(document_id, corrected=changed, accepted=accepted)


# --- ground-truth export -------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ReviewedCase:
    document_id: int
    bucket: str
    key: str
    version: str
    content_type: str | None
    schema_name: str
    page_count: int
    scanned: bool
    data: dict[str, Any]
    reviewers: list[str]
    reviewed_at: datetime
    corrected: list[str] = field(default_factory=list)

    @property
    def doc_name(self) -> str:
        suffix = {
            "application/pdf": ".pdf",
            "image/png": ".png",
            "image/jpeg": ".jpg",
            "image/tiff": ".tif",
        }.get(self.content_type or "")
        if suffix is None:
            match = re.search(r"\.([A-Za-z0-9]{1,5})$", self.key)
            suffix = f".{match.group(1).lower()}" if match else ".pdf"
        return f"pagemill-{self.document_id:07d}{suffix}"

    def ground_truth(self) -> dict[str, Any]:
        """The record in the samples' ground-truth format (fields as `pagemill eval` scores
        them, amounts as plain decimal strings)."""
        fields = {name: _plain(predicted_value(self.data, name)) for name in SCORED_FIELDS}
        items = self.data.get("line_items")
        line_items = (
            [
                {
                    k: _plain(item.get(k))
                    for k in ("description", "quantity", "unit_price", "amount")
                }
                for item in items
            ]
            if isinstance(items, list)
            else None
        )
        return {
            "doc": self.doc_name,
            "source": f"s3://{self.bucket}/{self.key}",
            "fields": fields,
            "line_items": line_items,
            "kind": "scanned-pdf" if self.scanned else "digital-pdf",
            "pages": self.page_count,
            "extra": {"schema": self.schema_name, "document_id": self.document_id},
            "notes": [
                f"reviewed in pagemill by {', '.join(self.reviewers)} at "
                f"{self.reviewed_at.isoformat()}; corrected: {', '.join(self.corrected) or 'none'}"
            ],
        }


def _plain(value: Any) -> Any:
    return None if value is None else str(value)


def reviewed_cases(session: Session, *, since: datetime | None = None) -> list[ReviewedCase]:
    """Documents a reviewer passed (done, with at least one verdict), oldest first."""
    rows = session.execute(
        text(
            """
            SELECT d.id, d.bucket, d.key, d.version, d.content_type, d.schema_name,
                   coalesce(d.page_count, 1) AS page_count,
                   coalesce(bool_and(NOT p.has_text_layer), false) AS scanned,
                   e.data, r.reviewers, r.reviewed_at, r.corrected
              FROM (SELECT document_id, array_agg(DISTINCT reviewer) AS reviewers,
                           max(created_at) AS reviewed_at,
                           array_agg(DISTINCT field) FILTER (WHERE action = 'corrected')
                               AS corrected
                      FROM review_corrections
                     GROUP BY document_id) r
              JOIN documents d ON d.id = r.document_id
              JOIN extractions e
                ON e.document_id = d.id AND e.schema_name = d.schema_name AND e.valid
              LEFT JOIN pages p ON p.document_id = d.id
             WHERE d.status = 'done'
               AND (CAST(:since AS timestamptz) IS NULL OR r.reviewed_at >= :since)
             GROUP BY d.id, e.data, r.reviewers, r.reviewed_at, r.corrected
             ORDER BY r.reviewed_at, d.id
            """
        ),
        {"since": since},
    )
    return [
        ReviewedCase(
            document_id=r.id,
            bucket=r.bucket,
            key=r.key,
            version=r.version,
            content_type=r.content_type,
            schema_name=r.schema_name,
            page_count=r.page_count,
            scanned=r.scanned,
            data=r.data,
            reviewers=sorted(r.reviewers),
            reviewed_at=r.reviewed_at,
            corrected=sorted(r.corrected or []),
        )
        for r in rows
    ]


Sink = Callable[[str, bytes], None]


@dataclass(frozen=True, slots=True)
class ExportResult:
    exported: list[str]
    skipped: dict[str, str]  # doc name -> why (the object cannot be read any more)


def export_ground_truth(
    cases: Iterable[ReviewedCase], s3: Any, sink: Sink, *, max_bytes: int
) -> ExportResult:
    """Write each case as `gt/NAME.json` and its original file as `docs/NAME` through `sink`
    (a folder or a zip file)."""
    exported: list[str] = []
    skipped: dict[str, str] = {}
    for case in cases:
        ref = ObjectRef(bucket=case.bucket, key=case.key, version=case.version)
        try:
            body = storage.download(s3, ref, max_bytes)
        except PipelineError as exc:
            skipped[case.doc_name] = exc.message
            continue
        stem = case.doc_name.rsplit(".", 1)[0]
        sink(f"docs/{case.doc_name}", body)
        gt = json.dumps(case.ground_truth(), indent=2, ensure_ascii=False) + "\n"
        sink(f"gt/{stem}.json", gt.encode("utf-8"))
        exported.append(case.doc_name)
    return ExportResult(exported, skipped)
