"""Receipt rules over positioned words: shop name, date, totals, tax, currency and items.

A till receipt is one narrow column: the shop's name first and in the largest type, then its
address, the date and a receipt number, the items (text and amount on one line, a "2 x 1,50"
line under the text when more than one was bought), then the total, what was paid and the tax
contained in the prices.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, time
from decimal import Decimal
from typing import Any

from pipeline.rules.answer import schema_json
from pipeline.rules.invoice import (
    Amount,
    Doc,
    PageWords,
    Reread,
    amounts_in,
    analyse,
    find_currency,
)
from pipeline.text.amounts import format_amount, parse_amount
from pipeline.text.dates import find_dates
from pipeline.text.lines import Line, make_line
from pipeline.text.normalise import alnum_key, within_one_edit

_TOTAL = re.compile(
    r"(?<![a-z])(?:total(?:\s*ttc)?|summe|gesamt(?:betrag)?|totaal|zu\s*zahlen|a\s*payer"
    r"|te\s*betalen|importe|totale|amount\s*due|endbetrag|brutto)(?![a-z])"
)
_SUBTOTAL = re.compile(
    r"(?<![a-z])(?:sub\s*-?\s*total|zwischensumme|sous\s*-?\s*total|subtotaal|netto|total\s*ht)"
    r"(?![a-z])"
)
_TAX = re.compile(r"(?<![a-z])(?:mwst|ust|vat|tva|btw|iva|tax|steuer|gst|davon\s*mwst)(?![a-z])")
# Lines about paying rather than buying: what was handed over, the change, the card.
_PAYMENT = re.compile(
    r"(?<![a-z])(?:bar|cash|especes|contant|gegeben|tendered|given|rendu|ruckgeld|rueckgeld"
    r"|wechselgeld|change|monnaie|wisselgeld|betaald|karte|card|visa|mastercard|maestro|ec"
    r"|girocard|cb|pin|paid|bezahlt|paye)(?![a-z])"
)
_TIP = re.compile(r"(?<![a-z])(?:tip|trinkgeld|pourboire|gratuity|fooi)(?![a-z])")
_NUMBER = re.compile(
    r"(?<![a-z])(?:beleg|bon|ticket|receipt|quittung|transaktion|trans|rechnung|facture|kassenbon"
    r"|invoice)\s*\.?\s*-?\s*(?:nr\.?|no\.?|n°|#|nummer|number)?\s*:?\s*([a-z0-9][\w\-/]*\d[\w\-/]*)"
)
# Receipt titles and headings that are not the shop's name.
_NOT_SHOP = re.compile(
    r"^(?:kassenbon|quittung|beleg|receipt|ticket|bon|recu|facture|rechnung|invoice|kopie"
    r"|copy|duplicate|duplikat|welcome|willkommen|bienvenue|welkom)\W*$"
)
_TIME = re.compile(r"(?<!\d)([01]?\d|2[0-3])[:.h]([0-5]\d)(?:[:.]([0-5]\d))?(?!\d)")
_QTY_PRICE = re.compile(r"^\s*(\d{1,3})\s*[x×*]\s*(\S+)")


@dataclass(slots=True)
class ReceiptFields:
    """The rules' answer for a receipt; `as_dict` gives the receipt schema's JSON shape."""

    merchant_name: str | None = None
    merchant_address: str | None = None
    receipt_number: str | None = None
    date: date | None = None
    time: time | None = None
    currency: str | None = None
    subtotal: Decimal | None = None
    tax: Decimal | None = None
    tip: Decimal | None = None
    total: Decimal | None = None
    line_items: list[dict[str, Any]] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return schema_json(self)


def extract_receipt(pages: Sequence[PageWords], reread: Reread | None = None) -> ReceiptFields:
    """Run the receipt rules over a receipt's pages (words in points, top-left origin)."""
    doc = analyse(pages)
    doc.reread = reread
    result = ReceiptFields()
    lines = _rows(doc, [line for line in doc.lines if _readable(line)])
    if not lines:
        return result
    _shop(doc, lines, result)
    _when(lines, doc.month_first, result)
    _number(lines, result)
    total_line = _totals(lines, result)
    _items(lines, total_line, result)
    result.currency = find_currency(doc)
    if result.currency is not None:
        result.confidence["currency"] = min(1.0, doc.evidence.get("currency", 1.5) / 3.0)
    return result


def _rows(doc: Doc, lines: list[Line]) -> list[Line]:
    """Lines with a price alone on the right joined to the text beside them: a photo taken at
    an angle puts "SUMME EUR" and its "75,20" on two slightly different baselines."""
    merged: list[Line] = []
    used: set[int] = set()
    for n, line in enumerate(lines):
        if line.index in used:
            continue
        width = doc.pages[line.page].width
        if _price_only(line, width):
            merged.append(line)
            continue
        if _last_amount(line) is None:
            near = [
                other
                for other in lines[max(0, n - 1) : n + 2]
                if other is not line
                and other.index not in used
                and other.page == line.page
                and _price_only(other, width)
                and abs((other.y0 + other.y1) - (line.y0 + line.y1)) / 2
                < 0.9 * max(line.height, other.height)
            ]
            if near:
                partner = min(near, key=lambda o: abs((o.y0 + o.y1) - (line.y0 + line.y1)))
                used.add(partner.index)
                merged = [m for m in merged if m is not partner]
                merged.append(make_line([*line.words, *partner.words], line.page, line.index))
                continue
        merged.append(line)
    return merged


def _price_only(line: Line, width: float) -> bool:
    """Nothing but an amount, on the right half of the receipt."""
    return (
        line.x0 > 0.45 * width
        and not any(c.isalpha() for c in line.text)
        and _last_amount(line) is not None
    )


def _readable(line: Line) -> bool:
    """Not OCR noise: some word of three letters or digits ("m me en dee" is crumpled paper)."""
    return any(sum(c.isalnum() for c in w.text) >= 3 for w in line.words)


def _shop(doc: Doc, lines: list[Line], result: ReceiptFields) -> None:
    """The shop's name: the first prominent line at the top, before the first date or price."""
    head: list[Line] = []
    for line in lines:
        if line.page != 0 or find_dates(line.ntext) or amounts_in(line.words):
            break
        head.append(line)
        if len(head) >= 6:
            break
    names = [
        ln
        for ln in head
        if sum(c.isalpha() for c in ln.text) >= 3 and not _NOT_SHOP.match(ln.ntext.strip())
    ]
    if not names:
        return
    tallest = max(names, key=lambda ln: ln.height)
    first = names[0]
    chosen = first if first.height >= 0.85 * tallest.height else tallest
    result.merchant_name = chosen.text.strip(" *-=_.")
    strength = 0.8 if chosen is first and chosen is tallest else 0.6
    result.confidence["merchant_name"] = strength
    below = [ln for ln in head if ln.index > chosen.index][:2]
    address = [ln.text.strip() for ln in below if any(c.isdigit() for c in ln.text)]
    if address:
        result.merchant_address = ", ".join(address)
        result.confidence["merchant_address"] = 0.6


def _when(lines: list[Line], month_first: bool, result: ReceiptFields) -> None:
    for line in lines:
        found = find_dates(line.ntext, month_first=month_first)
        if not found:
            continue
        result.date = found[0].value
        rest = line.ntext[found[0].end :]
        clock = _TIME.search(rest)
        # Only a time printed with seconds is kept: "10:40" would be stored as "10:40:00",
        # which the page does not print.
        if clock and clock.group(3) is not None:
            result.time = time(int(clock[1]), int(clock[2]), int(clock[3]))
        result.confidence["date"] = 0.9 if clock else 0.7
        return


def _number(lines: list[Line], result: ReceiptFields) -> None:
    for line in lines:
        match = _NUMBER.search(line.ntext)
        if match is None or find_dates(match.group(1)):
            continue
        # The value as printed (case kept): the word that holds the match's value.
        start = match.start(1)
        word = line.words[line.word_at(start)].text.strip(":#")
        result.receipt_number = word if word.casefold() == match.group(1) else match.group(1)
        result.confidence["receipt_number"] = 0.8
        return


def _last_amount(line: Line) -> Amount | None:
    found = [a for a in amounts_in(line.words) if a.parsed.decimals == 2]
    return found[-1] if found else None


def _totals(lines: list[Line], result: ReceiptFields) -> Line | None:
    """Total, subtotal, tax and tip; returns the total's line (the items end above it)."""
    item_sum = sum((a.value for a in _item_amounts(lines)), Decimal(0))
    totals: list[tuple[float, Line, Decimal]] = []
    taxes: list[tuple[Line, Decimal]] = []
    for line in lines:
        amount = _last_amount(line)
        if amount is None:
            continue
        text = line.ntext
        if (_TAX.search(text) or _near_word(line, _TAX_WORDS)) and not _TOTAL.search(text):
            taxes.append((line, amount.value))
        elif _SUBTOTAL.search(text):
            result.subtotal = amount.value
            result.confidence["subtotal"] = 0.7
        elif _TIP.search(text):
            result.tip = amount.value
            result.confidence["tip"] = 0.7
        elif (_TOTAL.search(text) or _near_word(line, _TOTAL_WORDS)) and not _PAYMENT.search(text):
            score = 2.0 + (1.0 if line.height >= 1.1 * _median_height(lines) else 0.0)
            if item_sum and abs(amount.value - item_sum) <= Decimal("0.01"):
                score += 1.5
            totals.append((score, line, amount.value))
    total_line: Line | None = None
    if totals:
        largest = max(value for _, _, value in totals)
        score, total_line, total = max(
            totals, key=lambda t: (t[0] + (0.5 if t[2] == largest else 0), t[1].index)
        )
        result.total = total
        result.confidence["total"] = min(1.0, score / 3.0)
    elif item_sum:
        result.total = item_sum  # no total line read: the items' sum, flagged as weak
        result.confidence["total"] = 0.3
    if taxes:
        rates = {_rate(line) for line, _ in taxes}
        chosen = taxes if len(rates) == len(taxes) else taxes[-1:]
        tax = sum((value for _, value in chosen), Decimal(0))
        if result.total is None or tax < result.total:
            result.tax = tax
            result.confidence["tax"] = 0.8
    return total_line


_TAX_WORDS = ("mwst", "steuer", "btw")
_TOTAL_WORDS = ("total", "totaal", "summe", "totale", "gesamt")


def _near_word(line: Line, words: Sequence[str]) -> bool:
    """A word one OCR slip away from one of `words` ("Must" for "MwSt")."""
    keys = [alnum_key(w.text) for w in line.words]
    return any(len(k) >= 4 and within_one_edit(k, word) for k in keys for word in words)


def _rate(line: Line) -> str:
    match = re.search(r"(\d{1,2}(?:[.,]\d{1,2})?)\s*%?", line.ntext)
    return match.group(1) if match else ""


def _median_height(lines: list[Line]) -> float:
    heights = sorted(ln.height for ln in lines)
    return heights[len(heights) // 2]


def _is_money_line(line: Line) -> bool:
    text = line.ntext
    return bool(
        _TOTAL.search(text)
        or _SUBTOTAL.search(text)
        or _TAX.search(text)
        or _PAYMENT.search(text)
        or _TIP.search(text)
    )


def _item_amounts(lines: list[Line]) -> list[Amount]:
    out = []
    for line in lines:
        if _is_money_line(line) or find_dates(line.ntext):
            continue
        amount = _last_amount(line)
        if amount is not None:
            out.append(amount)
    return out


def _items(lines: list[Line], total_line: Line | None, result: ReceiptFields) -> None:
    """Lines ending in a price above the total; a "2 x 1,50" line under a text-only line
    belongs to that text."""
    items: list[dict[str, Any]] = []
    pending: str | None = None  # a description printed alone, waiting for its price line
    started = False
    for line in lines:
        if total_line is not None and line.index >= total_line.index:
            break
        if find_dates(line.ntext) or _NUMBER.search(line.ntext):
            started = True
            continue
        if not started or _is_money_line(line):
            continue
        amount = _last_amount(line)
        words = line.words if amount is None else line.words[: amount.index]
        text = " ".join(w.text for w in words).strip(" .:*")
        if amount is None:
            if sum(c.isalpha() for c in text) >= 3:
                pending = text
            continue
        qty_price = _QTY_PRICE.match(text)
        item: dict[str, Any] = {
            "description": text or None,
            "quantity": None,
            "unit_price": None,
            "amount": format_amount(amount.value),
        }
        if qty_price:
            price = parse_amount(qty_price.group(2), ocr_fix=True)
            item["description"] = pending
            item["quantity"] = qty_price.group(1)
            if price is not None:
                item["unit_price"] = format_amount(price.value)
        elif not text:
            item["description"] = pending
        pending = None
        items.append(item)
    result.line_items = items
