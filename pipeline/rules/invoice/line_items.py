"""Finding the line items: the item table under its header, row by row."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from pipeline.domain import Word
from pipeline.rules.invoice.document import Doc
from pipeline.rules.invoice.values import amounts_in
from pipeline.rules.layout import is_header
from pipeline.text.amounts import format_amount, parse_amount
from pipeline.text.lines import Line
from pipeline.text.normalise import norm

_COLUMNS: dict[str, str] = {
    "unit_price": r"unit\s*price|price|preis|einzelpreis|e-?preis|stuckpreis|p\.?\s*u\.?(?:\s*ht)?"
    r"|prix(?:\s*unitaire)?|stuksprijs|prijs|rate|tarif|unit\s*cost|ep|netto\s*preis|nettopreis",
    "quantity": r"qty|quantity|menge|anzahl|qte|quantite|aantal|stuck|stk|hours|hrs|std|units?"
    r"|anz\.?|qte\.?",
    "amount": r"amount|line\s*total|total|betrag|gesamt|gesamtbetrag|gesamtpreis|summe|montant"
    r"|total\s*ht|bedrag|totaal|net\s*amount|line\s*amount|extension|gp|wert",
    "description": r"description|beschreibung|artikelbeschreibung|bezeichnung|artikelbezeichnung"
    r"|leistungsbeschreibung|produkt|artikel|leistung|designation|libelle|omschrijving|product"
    r"|item|items|article|service|services|text|positionstext|omschrijving|details?",
}
_COLUMN_RE = {name: re.compile(rf"(?<![a-z])(?:{p})(?![a-z])") for name, p in _COLUMNS.items()}
_POSITION_HEADER = re.compile(r"^(?:pos\.?|#|nr\.?|no\.?|lfd\.?|item|ligne|regel)(?![a-z])")
_NUMERIC = ("quantity", "unit_price", "amount")
# Article-number columns ("Code article", "Art.-Nr.", "SKU") are not the description.
_CODE_COLUMN = re.compile(
    r"(?<![a-z])(?:code|ref(?:erence)?|sku|art(?:ikel)?\.?\s*-?\s*nr\.?|artikelnummer|ean|gtin"
    r"|gln|part\s*(?:no|number)|item\s*(?:no|number|code))(?![a-z])|#"
)


@dataclass(slots=True)
class _Cell:
    x0: float
    x1: float
    text: str
    kind: str | None = None


@dataclass(slots=True)
class _Table:
    page: int
    top: float  # y where rows may start (the header's bottom, or the page top)
    after_index: int  # rows come after this line index
    cells: list[_Cell]

    def column(self, kind: str) -> _Cell | None:
        return next((c for c in self.cells if c.kind == kind), None)


def _header_cells(lines: Sequence[Line]) -> list[_Cell]:
    """Header cells from one to three stacked header lines: a wrapped header ("Unit Price
    Excl." over "VAT") becomes one cell."""
    cells: list[_Cell] = []
    for line in lines:
        for start, end in line.segments(0.6):
            x0 = line.words[start].x0
            x1 = max(w.x1 for w in line.words[start:end])
            text = line.words_between(start, end)
            for cell in cells:
                if x0 < cell.x1 and x1 > cell.x0:
                    cell.x0, cell.x1 = min(cell.x0, x0), max(cell.x1, x1)
                    cell.text = f"{cell.text} {text}"
                    break
            else:
                cells.append(_Cell(x0, x1, text))
    cells.sort(key=lambda c: c.x0)
    matches = [
        [
            kind
            for kind in _COLUMNS
            if _COLUMN_RE[kind].search(norm(cell.text))
            and not (kind == "description" and _CODE_COLUMN.search(norm(cell.text)))
        ]
        for cell in cells
    ]
    taken: set[str] = set()
    # Unambiguous cells first: "UNIT for P.U." names a unit and a price and must not take
    # the quantity column from "Qté".
    for single in (True, False):
        for cell, kinds in zip(cells, matches, strict=True):
            if cell.kind is not None or not kinds or (single and len(kinds) != 1):
                continue
            free = [k for k in kinds if k not in taken]
            if free:
                cell.kind = free[0]
                taken.add(free[0])
    return cells


def _header_stack(lines: Sequence[Line], position: int) -> list[Line]:
    """The line at `position` with up to two wrapped header lines above and below it."""
    stack = [lines[position]]
    for direction in (-1, 1):
        j = position + direction
        while 0 <= j < len(lines) and len(stack) < 5:
            near = stack[0] if direction < 0 else stack[-1]
            other = lines[j]
            gap = near.y0 - other.y1 if direction < 0 else other.y0 - near.y1
            if gap >= 0.6 * near.height or amounts_in(other.words):
                break
            if direction < 0:
                stack.insert(0, other)
            else:
                stack.append(other)
            j += direction
    return stack


def _find_tables(doc: Doc) -> list[_Table]:
    tables: list[_Table] = []
    for page in doc.pages:
        best: tuple[int, int, list[Line], list[_Cell]] | None = None
        for position, line in enumerate(page.lines):
            if amounts_in(line.words) or not any(
                _COLUMN_RE[k].search(line.ntext) for k in _COLUMNS
            ):
                continue
            stack = _header_stack(page.lines, position)
            cells = _header_cells(stack)
            kinds = {c.kind for c in cells if c.kind}
            if len(kinds) >= 3 and "amount" in kinds:
                key = (len(kinds), -len(stack))
                if best is None or key > best[:2]:
                    best = (key[0], key[1], stack, cells)
        if best is None:
            continue
        stack, cells = best[2], best[3]
        tables.append(_Table(page.index, stack[-1].y1, stack[-1].index, cells))
    return tables


def _assign(word: Word, table: _Table, height: float) -> tuple[str, float] | None:
    """The numeric column a number sits in (overlap first, else the nearest header cell within
    reach) with how well it fits; None when the nearest cell is not a numeric column."""
    best: tuple[float, _Cell] | None = None
    for cell in table.cells:
        overlap = min(word.x1, cell.x1) - max(word.x0, cell.x0)
        distance = -overlap if overlap > 0 else min(abs(word.x1 - cell.x1), abs(word.x0 - cell.x0))
        if best is None or distance < best[0]:
            best = (distance, cell)
    if best is None or best[0] > 3 * height or best[1].kind not in _NUMERIC:
        return None
    return best[1].kind or "", best[0]


def _description_span(table: _Table, page_width: float) -> tuple[float, float] | None:
    cell = table.column("description")
    if cell is None:
        return None
    following = [c.x0 for c in table.cells if c.x0 > cell.x0 + 1]
    return cell.x0, min(following, default=page_width)


@dataclass(slots=True)
class _Row:
    y: float
    numbers: dict[str, Decimal]
    description: list[tuple[float, str]]


def find_line_items(doc: Doc) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    stop_fields = {"total", "subtotal", "amount_due", "tax", "prepaid"}
    for table in _find_tables(doc):
        page = doc.pages[table.page]
        span = _description_span(table, page.width)
        first_numeric = min((c.x0 for c in table.cells if c.kind in _NUMERIC), default=page.width)
        strip_position = bool(
            (desc := table.column("description")) and _POSITION_HEADER.match(norm(desc.text))
        )
        rows: list[_Row] = []
        loose: list[tuple[float, float, str]] = []  # (y, x, text) description-only lines
        last_y = table.top
        for line in page.lines:
            if line.index <= table.after_index:
                continue
            totals_label = any(
                (
                    h.field in stop_fields
                    and h.spec.priority >= 2
                    and not is_header(h, doc.hits[line.index])
                )
                or (h.field in stop_fields and h.spec.priority >= 3)
                for h in doc.hits[line.index]
            )
            if line.y0 - last_y > 4 * max(line.height, doc.text_height):
                break
            numbers: dict[str, Decimal] = {}
            fit: dict[str, float] = {}
            words: list[tuple[float, str]] = []
            for i, word in enumerate(line.words):
                centre = (word.x0 + word.x1) / 2
                if (
                    span is not None
                    and span[0] - 0.5 * line.height <= centre < span[1]
                    and (word.x1 <= first_numeric + 2 or span[0] > first_numeric)
                ):
                    words.append((word.x0, word.text))
                    continue
                nxt = line.words[i + 1].text if i + 1 < len(line.words) else ""
                if "%" in word.text or nxt.startswith("%"):
                    continue
                parsed = parse_amount(word.text, ocr_fix=True)
                if parsed is None:
                    continue
                assigned = _assign(word, table, line.height)
                if assigned and assigned[1] < fit.get(assigned[0], float("inf")):
                    numbers[assigned[0]], fit[assigned[0]] = parsed.value, assigned[1]
            # The totals block ends the table, unless the line is an item whose text happens
            # to hold a totals word ("Total care package  3  40.00  120.00").
            if totals_label and not _is_item(numbers):
                break
            y = (line.y0 + line.y1) / 2
            if "amount" in numbers:
                rows.append(
                    _Row(y, numbers, [(line.y0, " ".join(t for _, t in words))] if words else [])
                )
                last_y = line.y1
            elif words and not numbers:
                loose.append((y, line.y0, " ".join(t for _, t in words)))
                last_y = line.y1 if rows else last_y
        if not rows:
            continue
        # A description-only line continues the row above when rows print their text on the
        # numbers' line (top-aligned cells); otherwise cells are centred vertically and the
        # line belongs to the nearest row.
        top_aligned = sum(1 for r in rows if r.description) * 2 > len(rows)
        limit = rows[-1].y + 2.5 * doc.text_height
        for y, y0, text in loose:
            if y > limit:
                continue
            above = [r for r in rows if r.y <= y]
            owner = above[-1] if top_aligned and above else min(rows, key=lambda r: abs(r.y - y))
            owner.description.append((y0, text))
        for row in rows:
            parts = [t for _, t in sorted(row.description)]
            description = " ".join(parts) or None
            if description and strip_position:
                description = re.sub(r"^\d{1,4}\s+", "", description) or None
            item = {
                "description": description,
                "quantity": row.numbers.get("quantity"),
                "unit_price": row.numbers.get("unit_price"),
                "amount": row.numbers["amount"],
            }
            _make_consistent(item)
            items.append(item)
    return [
        {
            "description": item["description"],
            "quantity": _fmt(item["quantity"]),
            "unit_price": _fmt(item["unit_price"]),
            "amount": _fmt(item["amount"]),
        }
        for item in items
    ]


def _is_item(numbers: dict[str, Decimal]) -> bool:
    qty, price, amount = (numbers.get(k) for k in _NUMERIC)
    return (
        qty is not None and price is not None and amount is not None and _close(qty * price, amount)
    )


def _fmt(value: Decimal | None) -> str | None:
    return None if value is None else format_amount(value)


def _close(a: Decimal, b: Decimal) -> bool:
    return abs(a - b) <= max(Decimal("0.01"), abs(b) * Decimal("0.005"))


def _make_consistent(item: dict[str, Any]) -> None:
    """quantity × unit price should be the amount. When the columns were misread and only the
    swapped reading of quantity and price adds up, swap them; when the price contradicts the
    amount either way (a discount, a gross price), derive nothing and keep what was printed."""
    qty, price, amount = item["quantity"], item["unit_price"], item["amount"]
    if qty is None or price is None or amount is None:
        return
    if _close(qty * price, amount):
        return
    if price == amount and qty != 0 and _close(qty * (amount / qty), amount):
        # The "price" column held the line amount: the unit price is amount / quantity.
        unit = amount / qty
        if unit == unit.quantize(Decimal("0.0001")):
            item["unit_price"] = unit
