"""Decisions: which lookups a document's values need, and which occurrence each value takes."""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, Protocol, TypeAlias

from pipeline.currencies import ISO_4217
from pipeline.grounding.index import Span
from pipeline.grounding.result import UNGROUNDED, Grounding, Location
from pipeline.schemas.vocabulary import ValueKind as Kind
from pipeline.text.dates import date_readings, printed_time


def kind_of(name: str, value: Any, kinds: Mapping[str, Kind]) -> Kind:
    """How a field's value is compared: as the schema's vocabulary says, else by its type and
    name."""
    if name in kinds:
        return kinds[name]
    if isinstance(value, (date, datetime)):
        return "date"
    if isinstance(value, time):
        return "time"
    if isinstance(value, (Decimal, int, float)):
        return "quantity" if "qty" in name or "quantity" in name else "amount"
    if name.endswith("date"):
        return "date"
    if "currency" in name:
        return "currency"
    if re.search(r"amount|price|total|^tax|_tax$|^sum$|_sum$", name):
        return "amount"
    if re.search(r"number|_no$|_nr$|_id$|^id$|reference", name):
        return "identifier"
    return "text"


# --- matching ------------------------------------------------------------------------------


@dataclass(slots=True)
class Row:
    """What is known of one line item while grounding it: where its text sits and where the
    previous item was."""

    after: tuple[int, float] | None = None  # (page, y) the item must start below
    page: int | None = None
    y0: float = 0.0
    y1: float = 0.0
    h: float = 0.0

    def place(self, page: int, y0: float, y1: float, h: float) -> None:
        if self.page is None:
            self.page, self.y0, self.y1, self.h = page, y0, y1, h

    def is_after(self, hit: Hit) -> bool:
        return self.after is None or (hit.page, hit.y0) > self.after


@dataclass(slots=True, eq=False)
class Hit:
    """One occurrence of a value, with everything choosing among occurrences needs, so that
    the page's words can be let go once its chunk is searched."""

    page: int
    rank: int  # reading order of the first word on its page
    span: Span
    loc: Location
    y0: float
    y1: float
    h: float
    cents: bool
    seq: int  # discovery order: breaks ties between occurrences starting at the same word
    dist: int = 0  # label distance, for a field outside line items
    line: int = 0
    line_y: float = 0.0
    line_box: tuple[float, float, float] = (0.0, 0.0, 0.0)  # y0, y1, height of the whole line
    x0: float = 0.0
    col: tuple[bool, bool, float] = (False, False, 0.0)

    @property
    def order(self) -> tuple[int, int, int]:
        return self.page, self.rank, self.seq


# What a value is looked up as. The field name is set when label distance picks among its
# occurrences (fields outside line items): then only the best occurrence need be kept.
Query: TypeAlias = (
    tuple[Literal["num"], Decimal, str | None]
    | tuple[Literal["date"], date, str | None]
    | tuple[Literal["cur"], str, bool]  # the bool: inside a line item, keep every occurrence
    | tuple[Literal["text"], str, Literal["text", "identifier"], str | None]
)


def make_query(kind: Kind, value: Any, name: str | None, in_row: bool) -> Query:
    if kind in ("amount", "quantity"):
        number = as_decimal(value)
        if number is not None:
            return ("num", number, name)
    elif kind == "date":
        day = as_date(value)
        if day is not None:
            return ("date", day, name)
    elif kind == "currency" and isinstance(value, str) and value.strip().upper() in ISO_4217:
        return ("cur", value.strip().upper(), in_row)
    elif kind == "time":
        printed = printed_time(value)
        if printed is not None:
            return ("text", printed, "identifier", name)
    return ("text", str(value), "identifier" if kind == "identifier" else "text", name)


class Source(Protocol):
    @property
    def prints_cents(self) -> bool: ...

    def hits(self, query: Query, cents_only: bool) -> list[Hit]: ...


class Planner:
    """Stands in for the pages in a dry run: records the lookups, finds nothing."""

    prints_cents = False

    def __init__(self) -> None:
        self.queries: dict[Query, None] = {}  # insertion-ordered set

    def hits(self, query: Query, cents_only: bool) -> list[Hit]:
        self.queries[query] = None
        return []


class Decider:
    """Walks the data and picks, for every value, one of its occurrences."""

    def __init__(self, kinds: dict[str, Kind], source: Source) -> None:
        self.kinds = kinds
        self.source = source
        self.result = Grounding()
        self.total: Query | None = None  # how the field "total" was looked up

    # walking the data

    def walk(self, data: Mapping[str, Any], prefix: str) -> None:
        scalars = [(k, v) for k, v in data.items() if not isinstance(v, (Mapping, list, tuple))]
        # Currency last: its sign is best taken from near the total.
        scalars.sort(key=lambda kv: kind_of(kv[0], kv[1], self.kinds) == "currency")
        for name, value in scalars:
            self.field(f"{prefix}{name}", name, value, None)
        for name, value in data.items():
            if isinstance(value, Mapping):
                self.walk(value, f"{prefix}{name}.")
            elif isinstance(value, (list, tuple)):
                self.rows(f"{prefix}{name}", name, value)

    def rows(self, path: str, name: str, items: Sequence[Any]) -> None:
        after: tuple[int, float] | None = None
        for n, item in enumerate(items):
            if not isinstance(item, Mapping):
                self.field(f"{path}[{n}]", name, item, None)
                continue
            row = Row(after=after)
            numbers: dict[str, Decimal] = {}
            # Text first: it places the row, and the row then picks among repeated numbers.
            for key, value in item.items():
                if isinstance(value, (Mapping, list, tuple)) or value is None:
                    continue
                number = None
                if kind_of(key, value, self.kinds) in ("amount", "quantity"):
                    number = as_decimal(value)
                if number is None:
                    self.field(f"{path}[{n}].{key}", key, value, row)
                else:
                    numbers[key] = number
            self.row_numbers(f"{path}[{n}].", numbers, row)
            for key, value in item.items():
                if isinstance(value, Mapping):
                    self.walk(value, f"{path}[{n}].{key}.")
            if row.page is not None:
                # Below the middle of the item's last line: the next item starts lower.
                after = (row.page, row.y1 - 0.3 * row.h)

    def row_numbers(self, prefix: str, values: dict[str, Decimal], row: Row) -> None:
        """A line item's numbers, grounded together: the printed line holding most of them,
        next to the item's text, is the item's row; each number is then taken from it."""
        found = {
            key: self.source.hits(("num", value, None), False) for key, value in values.items()
        }
        lines: dict[tuple[int, int], set[str]] = {}
        line_hit: dict[tuple[int, int], Hit] = {}
        for key, cands in found.items():
            for hit in cands:
                lines.setdefault((hit.page, hit.line), set()).add(key)
                line_hit.setdefault((hit.page, hit.line), hit)

        def rank(item: tuple[tuple[int, int], set[str]]) -> tuple[bool, bool, int, float, int, int]:
            (page_no, line_no), keys = item
            yc = line_hit[(page_no, line_no)].line_y
            gap = max(0.0, yc - row.y1, row.y0 - yc) if row.page == page_no else math.inf
            near = gap <= 2.0 * row.h
            later = row.after is None or (page_no, yc) > row.after
            return not near, not later, -len(keys), gap, page_no, line_no

        best = min(lines.items(), key=rank)[0] if lines else None
        used: set[tuple[int, int]] = set()
        # The line total first and from the right: it is the last column nearly everywhere.
        for key in sorted(found, key=lambda k: k not in ("amount", "total", "line_total")):
            cands = sorted(found[key], key=lambda c: c.order)
            if not cands:
                self.result.fields[prefix + key] = UNGROUNDED
                continue
            on_line = [c for c in cands if (c.page, c.line) == best]
            if on_line:
                pool = [c for c in on_line if not any((c.page, i) in used for i in c.span)]
                pool = pool or on_line
                if key in ("amount", "total", "line_total"):
                    hit = max(pool, key=lambda c: c.x0)
                else:
                    hit = min(pool, key=lambda c: c.col)
            else:
                later = [c for c in cands if row.is_after(c)]
                hit = (later or cands)[0]
            used.update((hit.page, i) for i in hit.span)
            self.result.fields[prefix + key] = hit.loc
        if best is not None and row.page is None:
            row.place(best[0], *line_hit[best].line_box)

    def field(self, path: str, name: str, value: Any, row: Row | None) -> None:
        if value is None or isinstance(value, bool):
            return
        if isinstance(value, str) and not value.strip():
            return
        kind = kind_of(name, value, self.kinds)
        labelled = row is None and kind != "currency"
        query = make_query(kind, value, name if labelled else None, row is not None)
        if path == "total":
            self.total = query
        # Where money is printed with cents, a bare "1" (a page number, a quantity) is no
        # evidence for an amount of 1.00.
        cents_only = kind == "amount" and query[0] == "num" and self.source.prints_cents
        candidates = self.source.hits(query, cents_only)
        if not candidates:
            self.result.fields[path] = UNGROUNDED
            return
        hit = self.choose(kind, candidates, row)
        self.result.fields[path] = hit.loc
        if row is not None:
            row.place(hit.page, hit.y0, hit.y1, hit.h)

    def choose(self, kind: Kind, candidates: list[Hit], row: Row | None) -> Hit:
        candidates = sorted(candidates, key=lambda c: c.order)
        if len(candidates) == 1:
            return candidates[0]
        if row is not None:
            # Within a line item, the first occurrence below the previous item.
            return next((c for c in candidates if row.is_after(c)), candidates[0])
        if kind == "currency":
            total = self.result.fields.get("total")
            if isinstance(total, Location):
                near = [c for c in candidates if c.page == total.page]
                if near:
                    return min(near, key=lambda c: _distance(c.loc.bbox, total.bbox))
            return candidates[0]
        return min(candidates, key=lambda c: (c.dist, c.order))


def _distance(a: tuple[float, float, float, float], b: tuple[float, float, float, float]) -> float:
    dx = max(0.0, b[0] - a[2], a[0] - b[2])
    dy = max(0.0, b[1] - a[3], a[1] - b[3])
    return math.hypot(dx, dy)


def as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (Decimal, int)):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(str(value)) if math.isfinite(value) else None
    if isinstance(value, str):
        try:
            number = Decimal(value.strip())
        except InvalidOperation:
            return None
        return number if number.is_finite() else None
    return None


def as_date(value: Any) -> date | None:
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    if isinstance(value, str):
        try:
            return date.fromisoformat(value.strip()[:10])
        except ValueError:
            readings = date_readings(value)  # a date copied as printed, "11. Juli 2014"
            return next(iter(readings)) if len(readings) == 1 else None
    return None
