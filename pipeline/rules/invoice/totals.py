"""Finding the subtotal, tax and total: the amounts whose labels and sums agree best."""

from __future__ import annotations

import itertools
import re
from collections import defaultdict
from decimal import Decimal

from pipeline.rules.invoice.document import Box, Candidate, Doc
from pipeline.rules.invoice.values import amount_candidates, amounts_in
from pipeline.schemas import invoice_labels as L
from pipeline.text.amounts import parse_amount
from pipeline.text.lines import Line

_TOLERANCE = Decimal("0.015")  # rounding slack when checking that amounts add up


def _consistent(
    totals: list[Candidate], subtotals: list[Candidate], taxes: list[Candidate]
) -> tuple[float, Candidate, Candidate, Candidate] | None:
    """The best-scored (score, total, subtotal, tax) with subtotal + tax = total."""
    best: tuple[float, Candidate, Candidate, Candidate] | None = None
    for total in totals:
        for sub in subtotals:
            if sub.value > total.value:
                continue
            for tax in taxes:
                if tax.value >= total.value or abs(sub.value + tax.value - total.value) > (
                    _TOLERANCE
                ):
                    continue
                score = total.score + sub.score + tax.score
                if (
                    best is None
                    or score > best[0]
                    or (score == best[0] and total.line > best[1].line)
                ):
                    best = (score, total, sub, tax)
    return best


_AMOUNT_CHARS = "0123456789.,-"


def _reread_amounts(doc: Doc, group: list[Candidate], limit: int = 3) -> list[Candidate]:
    """Second readings of the best few candidates of one field, where they differ."""
    if doc.reread is None:
        return []
    extra: list[Candidate] = []
    seen: set[tuple[int, Box]] = set()
    for cand in sorted(group, key=lambda c: -c.score):
        if cand.where is None or cand.where in seen:
            continue
        seen.add(cand.where)
        if len(seen) > limit:
            break
        page, box = cand.where
        parsed = parse_amount(doc.reread(page, box, _AMOUNT_CHARS).replace(" ", ""))
        if parsed is not None and parsed.value != cand.value:
            extra.append(Candidate(parsed.value, cand.score - 0.05, cand.line, "reread", None))
    return extra


_EXEMPT = re.compile(
    r"(?<![a-z])(?:keine\s+umsatzsteuer|steuerfrei|umsatzsteuerbefreit|steuerbefreit"
    r"|§\s*19\s*ustg|innergemeinschaftliche|reverse\s+charge|autoliquidation"
    r"|tva\s+non\s+applicable|exonere\w*|293\s*b|vat\s+exempt|exempt\s+from\s+vat"
    r"|tax\s+exempt|intra-?community|btw\s+verlegd|vrijgesteld|esente\s+iva|exento\s+de\s+iva)"
)
_RATE = re.compile(r"^\(?\d{1,2}(?:[.,]\d{1,2})?\s?%\)?$|^%$")


def _vat_rows(doc: Doc) -> list[tuple[Line, Decimal, Decimal, Decimal]]:
    """Rows of a tax breakdown ("19 %  516,75  98,18  614,93"): a rate and three amounts with
    net + tax = gross. One row per rate; their sums are the document's totals."""
    rows: list[tuple[Line, Decimal, Decimal, Decimal]] = []
    for line in doc.lines:
        if not any(_RATE.match(w.text) or w.text.endswith("%") for w in line.words):
            continue
        values = [a.value for a in amounts_in(line.words) if a.value >= 0]
        found = None
        for i, j, k in itertools.combinations(range(len(values)), 3):
            net, tax, gross = values[i], values[j], values[k]
            if gross > 0 and tax < gross and abs(net + tax - gross) <= _TOLERANCE:
                found = (net, tax, gross)
                break
        if found is not None:
            rows.append((line, *found))
    return rows


def find_totals(doc: Doc) -> tuple[Decimal | None, Decimal | None, Decimal | None]:
    """(subtotal, tax, total): the total best supported by its label, by amounts that add up
    to it (subtotal + tax, or a tax breakdown's rows) and by being the largest labelled total;
    then the subtotal and tax that agree with it."""
    cands: dict[str, list[Candidate]] = defaultdict(list)
    last_page = len(doc.pages) - 1
    for hit in doc.hits_of(*L.AMOUNT_FIELDS):
        for cand in amount_candidates(doc, hit):
            if hit.line.page == last_page:
                cand.score += 0.1
            cands[hit.field].append(cand)
    totals = [c for c in cands["total"] if c.value >= 0]
    totals += [
        Candidate(c.value, c.score - 0.8, c.line, "amount_due", c.where)
        for c in cands["amount_due"]
        if c.value > 0
    ]
    subtotals = [c for c in cands["subtotal"] if c.value > 0]
    taxes = [c for c in cands["tax"] if c.value >= 0]
    rows = _vat_rows(doc)
    if rows:
        # Only the rows of one breakdown: the last block of consecutive rate lines.
        block = [rows[-1]]
        for row in reversed(rows[:-1]):
            if block[0][0].index - row[0].index <= 2:
                block.insert(0, row)
            else:
                break
        line = block[-1][0].index
        net = sum((r[1] for r in block), Decimal(0))
        tax = sum((r[2] for r in block), Decimal(0))
        gross = sum((r[3] for r in block), Decimal(0))
        weight = 2.6 if len(block) > 1 else 2.2
        subtotals.append(Candidate(net, weight, line, "breakdown"))
        taxes.append(Candidate(tax, weight + 0.3, line, "breakdown"))
        totals.append(Candidate(gross, weight - 0.2, line, "breakdown"))

    chosen = _choose_total(totals, subtotals, taxes)
    if chosen is None and doc.reread is not None:
        # OCR misread a digit somewhere ("3716,37"): read the strongest candidates again.
        for group in (totals, subtotals, taxes):
            group.extend(_reread_amounts(doc, group))
        chosen = _choose_total(totals, subtotals, taxes)
    if chosen is None:
        sub_only = max(subtotals, key=lambda c: (c.score, c.line), default=None)
        tax_only = max(taxes, key=lambda c: (c.score, c.line), default=None)
        _evidence(doc, subtotal=_scaled(sub_only), tax=_scaled(tax_only))
        return (sub_only.value if sub_only else None, tax_only.value if tax_only else None, None)
    best, support = chosen
    total = best.value
    doc.evidence["total"] = support
    pair = _consistent([best], subtotals, taxes)
    if pair is not None:
        _evidence(doc, subtotal=3.0, tax=3.0)
        return pair[2].value, pair[3].value, total
    # Several tax rates, each on its own line, adding up with the subtotal.
    tax_lines = {c.line: c.value for c in sorted(taxes, key=lambda c: c.score) if c.value > 0}
    for sub in sorted(subtotals, key=lambda c: -c.score):
        if len(tax_lines) >= 2 and abs(sub.value + sum(tax_lines.values()) - total) <= _TOLERANCE:
            _evidence(doc, subtotal=2.7, tax=2.7)
            return sub.value, sum(tax_lines.values(), Decimal(0)), total
    exempt = any(_EXEMPT.search(line.ntext) for line in doc.lines)
    # No tax at all (exempt, reverse charge): the net amount is the total.
    if any(s.value == total for s in subtotals) or (exempt and not taxes):
        tax_zero = next((t.value for t in taxes if t.value == 0), None)
        if tax_zero is None and exempt:
            tax_zero = Decimal("0.00")
        _evidence(doc, subtotal=2.5, tax=2.5 if tax_zero is not None else None)
        return total, tax_zero, total
    sub_best = max((c for c in subtotals if c.value <= total), key=lambda c: c.score, default=None)
    tax_best = max((c for c in taxes if c.value < total), key=lambda c: c.score, default=None)
    _evidence(doc, subtotal=_scaled(sub_best), tax=_scaled(tax_best))
    return (sub_best.value if sub_best else None, tax_best.value if tax_best else None, total)


def _scaled(cand: Candidate | None) -> float | None:
    """A value taken on its own label alone, with nothing adding up to confirm it."""
    return None if cand is None else 0.8 * cand.score


def _evidence(doc: Doc, **strengths: float | None) -> None:
    for name, strength in strengths.items():
        if strength:
            doc.evidence[name] = float(strength)


def _choose_total(
    totals: list[Candidate], subtotals: list[Candidate], taxes: list[Candidate]
) -> tuple[Candidate, float] | None:
    """The total whose label, agreeing amounts and size make the best case, with that case's
    strength."""
    if not totals:
        return None
    strong = [c.value for c in totals if c.score >= 2]
    largest = max(strong, default=None)
    best: tuple[float, int, Candidate] | None = None
    for cand in totals:
        support = cand.score
        if _consistent([cand], subtotals, taxes) is not None:
            support += 1.0
        if largest is not None and cand.value == largest:
            support += 0.6
        if cand.value == 0:
            support -= 0.5  # a balance of 0.00 is more often "nothing left to pay"
        key = (support, cand.line, cand)
        if best is None or key[:2] > best[:2]:
            best = key
    return (best[2], best[0]) if best is not None else None
