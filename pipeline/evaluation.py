"""Accuracy evaluation against ground truth: loading cases, scoring fields, and the report."""

from __future__ import annotations

import json
import re
import time
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

from pipeline.money import usd

# The fields the samples' README scores, in report order.
SCORED_FIELDS: tuple[str, ...] = (
    "invoice_number",
    "date",
    "total",
    "currency",
    "vendor_name",
    "tax",
)
AMOUNT_FIELDS = frozenset({"total", "tax", "subtotal", "amount_due"})
# Ground-truth name -> names it may have in the extracted record (invoice, then receipt).
PREDICTION_KEYS: dict[str, tuple[str, ...]] = {
    "date": ("invoice_date", "date"),
    "vendor_name": ("vendor_name", "merchant_name"),
    "invoice_number": ("invoice_number", "receipt_number"),
}

_LEGAL_FORMS = frozenset(
    {
        *("gmbh", "mbh", "ag", "kg", "kgaa", "ug", "ohg", "gbr", "ek", "se"),
        *("co", "cie", "company", "corp", "corporation", "inc", "incorporated"),
        *("ltd", "limited", "llc", "llp", "lp", "plc"),
        *("sarl", "sas", "sasu", "sa", "eurl", "sci", "snc"),
        *("bv", "nv", "vof", "cv", "oy", "ab", "as", "aps", "srl", "spa", "sl", "pty"),
    }
)

ExtractFn = Callable[[Path], tuple[dict[str, Any], Decimal, float]]
# Who read a document (the provider that produced its result, e.g. "einvoice" for an
# e-invoice's XML, "local" for the offline rules): reported so that a figure is never an
# extractor's when the XML gave the answer.
ReadByFn = Callable[[Path], str | None]


@dataclass(frozen=True, slots=True)
class Case:
    """One document with its ground truth."""

    name: str
    path: Path
    kind: str
    pages: int
    fields: dict[str, Any]
    line_items: list[dict[str, Any]] = field(default_factory=list)
    source: str = "unknown"  # where the document comes from (the repository or producer)


def load_cases(directory: Path | str) -> list[Case]:
    """Cases from DIR/gt/*.json, each naming its document in DIR/docs/ (the samples layout)."""
    root = Path(directory)
    gt_dir, docs_dir = root / "gt", root / "docs"
    if not gt_dir.is_dir():
        raise FileNotFoundError(f"{gt_dir} does not exist: expected DIR/gt/*.json and DIR/docs/")
    cases: list[Case] = []
    missing: list[str] = []
    for gt_path in sorted(gt_dir.glob("*.json")):
        gt = json.loads(gt_path.read_text(encoding="utf-8"))
        doc_name = gt.get("doc") or f"{gt_path.stem}.pdf"
        doc_path = docs_dir / doc_name
        if not doc_path.is_file():
            missing.append(doc_name)
            continue
        cases.append(
            Case(
                name=doc_name,
                path=doc_path,
                kind=str(gt.get("kind") or "unknown"),
                pages=int(gt.get("pages") or 1),
                fields=dict(gt.get("fields") or {}),
                line_items=list(gt.get("line_items") or []),
                source=_source_of(gt),
            )
        )
    if missing:
        raise FileNotFoundError(f"ground truth names documents not in {docs_dir}: {missing}")
    return cases


def _source_of(gt: dict[str, Any]) -> str:
    """The repository a document comes from ("owner/repo:path" -> "owner/repo")."""
    source = str(gt.get("source") or "").split(":", 1)[0].strip()
    return source or "unknown"


# --- scoring -------------------------------------------------------------------------------


def _fold(text: str) -> str:
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def _decimal(value: Any) -> Decimal | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        return Decimal(str(value).strip())
    except InvalidOperation:
        return None


def _iso_date(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, str) and re.match(r"^\d{4}-\d{2}-\d{2}", value.strip()):
        return value.strip()[:10]
    return None


def invoice_number_key(value: Any) -> str:
    """Spaces and a leading '#' ignored, case-insensitive."""
    return re.sub(r"\s+", "", str(value)).lstrip("#").casefold()


def vendor_key(value: Any) -> list[str]:
    """Words of a company name without punctuation, accents or legal-form suffixes."""
    words = re.sub(r"[^\w\s]", " ", _fold(str(value))).split()
    # "S.A.R.L." splits into letters: join single letters back before dropping legal forms.
    joined: list[str] = []
    letters = ""
    for word in [*words, ""]:
        if len(word) == 1 and word.isalpha():
            letters += word
            continue
        if letters:
            joined.append(letters)
            letters = ""
        if word:
            joined.append(word)
    return [w for w in joined if w not in _LEGAL_FORMS]


def _contains(outer: Sequence[str], inner: Sequence[str]) -> bool:
    size = len(inner)
    return any(list(outer[i : i + size]) == list(inner) for i in range(len(outer) - size + 1))


def vendor_matches(predicted: Any, expected: Any) -> bool:
    got, want = vendor_key(predicted), vendor_key(expected)
    if not got or not want:
        return False
    return _contains(got, want) or _contains(want, got)


def score_field(name: str, predicted: Any, expected: Any) -> bool | None:
    """One field by the samples' rules; None when the ground truth has no value (not scored)."""
    if expected is None:
        return None
    if predicted is None or predicted == "":
        return False
    if name in AMOUNT_FIELDS:
        got, want = _decimal(predicted), _decimal(expected)
        return got is not None and want is not None and got == want
    if name in {"date", "invoice_date", "due_date"}:
        return _iso_date(predicted) == _iso_date(expected)
    if name == "invoice_number":
        return invoice_number_key(predicted) == invoice_number_key(expected)
    if name == "vendor_name":
        return vendor_matches(predicted, expected)
    if name == "currency":
        return str(predicted).strip() == str(expected).strip()
    return _fold(str(predicted).strip()) == _fold(str(expected).strip())


def predicted_value(pred: dict[str, Any], name: str) -> Any:
    """The extracted value scored against ground-truth field `name`."""
    for key in PREDICTION_KEYS.get(name, (name,)):
        if pred.get(key) is not None:
            return pred[key]
    return pred.get(name)


def score_fields(pred: dict[str, Any], gt_fields: dict[str, Any]) -> dict[str, bool | None]:
    """Every ground-truth field: True/False, or None where the ground truth is null."""
    return {
        name: score_field(name, predicted_value(pred, name), want)
        for name, want in gt_fields.items()
    }


# --- running -------------------------------------------------------------------------------


@dataclass(slots=True)
class DocResult:
    name: str
    kind: str
    pages: int
    scores: dict[str, bool | None]
    prediction: dict[str, Any]
    expected: dict[str, Any]
    cost_usd: Decimal = Decimal(0)
    latency_s: float = 0.0
    error: str | None = None
    read_by: str | None = None
    source: str = "unknown"

    @property
    def wrong(self) -> list[str]:
        return [name for name, ok in self.scores.items() if ok is False]


@dataclass(frozen=True, slots=True)
class Accuracy:
    correct: int
    scored: int

    @property
    def rate(self) -> float | None:
        return self.correct / self.scored if self.scored else None

    def __str__(self) -> str:
        if not self.scored:
            return "-"
        return f"{self.correct}/{self.scored} {100.0 * self.correct / self.scored:5.1f}%"


@dataclass(slots=True)
class Report:
    fields: tuple[str, ...]
    docs: list[DocResult]

    @property
    def kinds(self) -> list[str]:
        return sorted({d.kind for d in self.docs})

    @property
    def readers(self) -> list[str]:
        return sorted({d.read_by for d in self.docs if d.read_by})

    @property
    def sources(self) -> list[str]:
        return sorted({d.source for d in self.docs})

    def accuracy(
        self,
        name: str | None = None,
        kind: str | None = None,
        read_by: str | None = None,
        source: str | None = None,
    ) -> Accuracy:
        """Accuracy of one field (or all scored fields), overall, for one document kind or
        source, or for the documents one reader read."""
        names = self.fields if name is None else (name,)
        results = [
            d.scores.get(n)
            for d in self.docs
            if (kind is None or d.kind == kind)
            and (read_by is None or d.read_by == read_by)
            and (source is None or d.source == source)
            for n in names
        ]
        scored = [r for r in results if r is not None]
        return Accuracy(sum(1 for r in scored if r), len(scored))

    @property
    def total_cost_usd(self) -> Decimal:
        return sum((d.cost_usd for d in self.docs), Decimal(0))

    def seconds_per_page(self, kind: str | None = None) -> float | None:
        chosen = [d for d in self.docs if kind is None or d.kind == kind]
        pages = sum(d.pages for d in chosen)
        return sum(d.latency_s for d in chosen) / pages if pages else None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form for `--out report.json`."""

        def acc(value: Accuracy) -> dict[str, Any]:
            return {"correct": value.correct, "scored": value.scored, "rate": value.rate}

        return {
            "fields": list(self.fields),
            "overall": {n: acc(self.accuracy(n)) for n in self.fields}
            | {"all": acc(self.accuracy())},
            "by_kind": {
                k: {n: acc(self.accuracy(n, k)) for n in self.fields}
                | {"all": acc(self.accuracy(None, k))}
                for k in self.kinds
            },
            "by_reader": {
                r: {"documents": sum(1 for d in self.docs if d.read_by == r)}
                | {n: acc(self.accuracy(n, read_by=r)) for n in self.fields}
                | {"all": acc(self.accuracy(read_by=r))}
                for r in self.readers
            },
            "by_source": {
                s: {n: acc(self.accuracy(n, source=s)) for n in self.fields}
                | {"all": acc(self.accuracy(None, source=s))}
                for s in self.sources
            },
            "cost_usd": usd(self.total_cost_usd),
            "seconds_per_page": {k: self.seconds_per_page(k) for k in self.kinds}
            | {"all": self.seconds_per_page()},
            "docs": [
                {
                    "doc": d.name,
                    "kind": d.kind,
                    "source": d.source,
                    "pages": d.pages,
                    "scores": d.scores,
                    "wrong": {
                        n: {"expected": d.expected.get(n), "got": _predicted(d.prediction, n)}
                        for n in d.wrong
                    },
                    "read_by": d.read_by,
                    "cost_usd": usd(d.cost_usd),
                    "latency_s": round(d.latency_s, 3),
                    "error": d.error,
                }
                for d in self.docs
            ],
        }


def _predicted(prediction: dict[str, Any], name: str) -> Any:
    value = predicted_value(prediction, name)
    return value if value is None or isinstance(value, str | int | float | bool) else str(value)


def evaluate(
    cases: Iterable[Case],
    extract_fn: ExtractFn,
    fields: Sequence[str] = SCORED_FIELDS,
    read_by: ReadByFn | None = None,
) -> Report:
    """Run `extract_fn` on every case and score it. A document that fails counts every scored
    field as wrong and keeps the error; it does not stop the run. `read_by` names who read
    each document after `extract_fn` ran on it."""
    docs: list[DocResult] = []
    for case in cases:
        expected = {n: case.fields.get(n) for n in fields}
        started = time.perf_counter()
        try:
            data, cost, latency = extract_fn(case.path)
        except Exception as exc:  # noqa: BLE001 - one broken document must not end the run
            docs.append(
                DocResult(
                    name=case.name,
                    kind=case.kind,
                    pages=case.pages,
                    scores={n: (None if v is None else False) for n, v in expected.items()},
                    prediction={},
                    expected=expected,
                    latency_s=time.perf_counter() - started,
                    error=f"{type(exc).__name__}: {exc}",
                    source=case.source,
                )
            )
            continue
        docs.append(
            DocResult(
                name=case.name,
                kind=case.kind,
                pages=case.pages,
                scores=score_fields(data, expected),
                prediction=data,
                expected=expected,
                cost_usd=cost,
                latency_s=latency,
                read_by=read_by(case.path) if read_by else None,
                source=case.source,
            )
        )
    return Report(fields=tuple(fields), docs=docs)


def format_report(report: Report) -> str:
    """Plain-text tables: per-field accuracy (overall and per kind), then one row per doc."""
    kinds = report.kinds
    headers = ["field", "overall", *kinds]
    rows = [
        [n, str(report.accuracy(n)), *(str(report.accuracy(n, k)) for k in kinds)]
        for n in report.fields
    ]
    rows.append(
        ["all fields", str(report.accuracy()), *(str(report.accuracy(None, k)) for k in kinds)]
    )
    per_page = report.seconds_per_page()
    rows.append(
        ["s/page", _seconds(per_page), *(_seconds(report.seconds_per_page(k)) for k in kinds)]
    )
    lines = _table(headers, rows)
    lines.append("")
    if len(report.sources) > 1:
        source_rows = [
            [
                s,
                str(sum(1 for d in report.docs if d.source == s)),
                ", ".join(sorted({d.kind for d in report.docs if d.source == s})),
                str(report.accuracy(None, source=s)),
                ", ".join(
                    f"{n} {report.accuracy(n, source=s)}"
                    for n in report.fields
                    if (a := report.accuracy(n, source=s)).scored and a.correct < a.scored
                ),
            ]
            for s in report.sources
        ]
        lines += _table(["source", "docs", "kinds", "all fields", "fields below 100%"], source_rows)
        lines.append("")
    doc_rows = [
        [
            d.name,
            d.kind,
            str(d.pages),
            d.read_by or "-",
            str(
                Accuracy(
                    sum(1 for v in d.scores.values() if v),
                    sum(1 for v in d.scores.values() if v is not None),
                )
            ),
            usd(d.cost_usd, 4),
            f"{d.latency_s:.2f}",
            d.error
            or ", ".join(
                f"{n}: got {_predicted(d.prediction, n)!r}, want {d.expected.get(n)!r}"
                for n in d.wrong
            ),
        ]
        for d in report.docs
    ]
    lines += _table(
        ["doc", "kind", "pages", "read by", "correct", "cost $", "latency s", "wrong"], doc_rows
    )
    lines.append("")
    lines.append(f"documents: {len(report.docs)}   total cost: ${usd(report.total_cost_usd, 4)}")
    for reader in report.readers:
        count = sum(1 for d in report.docs if d.read_by == reader)
        lines.append(
            f"read by {reader}: {count} document(s), fields {report.accuracy(read_by=reader)}"
        )
    return "\n".join(lines)


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


def _table(headers: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [headers, *rows]) for i in range(len(headers))]

    def fmt(row: list[str]) -> str:
        return "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip()

    return [fmt(headers), "  ".join("-" * w for w in widths), *(fmt(r) for r in rows)]
