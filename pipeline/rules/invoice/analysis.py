"""Reading a document for the invoice rules: lines, the labels on them, and its date order."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipeline.rules.invoice.document import Doc, PageWords
from pipeline.rules.layout import is_header, right_words
from pipeline.schemas import invoice_labels as L
from pipeline.text.dates import find_dates
from pipeline.text.labels import LabelHit, LabelSpec, find_labels
from pipeline.text.lines import Line, build_pages, page_text_height
from pipeline.text.normalise import norm


def analyse(pages: Sequence[PageWords]) -> Doc:
    built = build_pages(pages)
    lines = [line for page in built for line in page.lines]
    hits = {
        line.index: _party_labels_only_as_headings(
            line, _not_in_prose(line, _outside_brackets(line, find_labels(line, L.ALL_LABELS)))
        )
        for line in lines
    }
    doc = Doc(pages=built, lines=lines, hits=hits, text_height=page_text_height(lines))
    _restack_headers(doc)
    doc.month_first = _month_first(doc)
    return doc


def _not_in_prose(line: Line, hits: list[LabelHit]) -> list[LabelHit]:
    """Drop labels deep inside a sentence ("... en indiquant le numéro de facture"): a label
    opens its cell or follows a word or two, it does not end a line of running text."""
    kept = []
    for hit in hits:
        start, _ = line.segment_of(hit.start)
        before = [w for w in line.words[start : hit.start] if any(c.isalpha() for c in w.text)]
        if len(before) > 4 and hit.field not in {"seller", "customer", "ship_to"}:
            continue
        kept.append(hit)
    return kept


def _outside_brackets(line: Line, hits: list[LabelHit]) -> list[LabelHit]:
    """Drop labels inside a parenthesis: "Net (plus 19% VAT) 376.37" names no tax amount."""
    kept = []
    for hit in hits:
        before = line.ntext[: line.nspans[hit.start][0]]
        if before.count("(") > before.count(")") and hit.field in L.AMOUNT_FIELDS:
            continue
        kept.append(hit)
    return kept


def _party_labels_only_as_headings(line: Line, hits: list[LabelHit]) -> list[LabelHit]:
    """ "Client", "Seller", "Fournisseur" are also ordinary words ("LE CLIENT", "Seller line 2",
    "me@buyer.com"): as party labels they must open their cell and end it or end in a colon."""
    kept = []
    for hit in hits:
        if hit.field in {"seller", "customer", "ship_to"}:
            start, end = line.segment_of(hit.start)
            label_text = line.words_between(hit.start, hit.end)
            opens = hit.start == start
            closes = (
                hit.end >= end
                or label_text.endswith(":")
                or (hit.end < len(line.words) and line.words[hit.end].text.startswith(":"))
            )
            if not (opens and closes):
                continue
        kept.append(hit)
    return kept


def _restack_headers(doc: Doc) -> None:
    """A table header may wrap ("Shipment" over "Date"): read the word above a weak header
    label together with it, so "Shipment Date" is not taken for the invoice date."""
    by_index = {line.index: line for line in doc.lines}
    for line in doc.lines:
        updated: list[LabelHit] = []
        for hit in doc.hits[line.index]:
            replacement = hit
            if (
                hit.spec.priority <= 2
                and is_header(hit, doc.hits[line.index])
                and not any(
                    c.isdigit() for w in right_words(hit, doc.hits[line.index]) for c in w.text
                )
            ):
                above = by_index.get(line.index - 1)
                if above is not None and above.page == line.page:
                    gap = line.y0 - above.y1
                    stacked = [w for w in above.words if w.x0 < hit.x1 + 2 and w.x1 > hit.x0 - 2]
                    if stacked and gap < 0.8 * line.height:
                        label = norm(hit.line.words_between(hit.start, hit.end))
                        prefix = norm(" ".join(w.text for w in stacked))
                        replacement = _restacked(hit, f"{prefix} {label}", len(prefix))
            updated.append(replacement)
        doc.hits[line.index] = updated


def _restacked(hit: LabelHit, text: str, prefix_length: int) -> LabelHit:
    """`hit` relabelled by the longest label that ends `text` and takes in the words above."""
    best: tuple[int, LabelSpec] | None = None
    for spec in L.ALL_LABELS:
        for match in spec.compiled().finditer(text):
            covers = match.end() == len(text) and match.start() <= prefix_length
            if covers and spec.field != hit.field and (best is None or match.start() < best[0]):
                best = (match.start(), spec)
    if best is None:
        return hit
    return LabelHit(best[1], hit.line, hit.start, hit.end, hit.char_end)


def _month_first(doc: Doc) -> bool:
    """US order (MM/DD) when the document says so: an unambiguous MM/DD date, a written
    "February 17, 2026", or an English document in dollars; otherwise day first."""
    month_first_votes = day_first_votes = 0
    english = german_french_dutch = 0
    for line in doc.lines:
        for found in find_dates(line.ntext, month_first=False):
            if not found.ambiguous and re.fullmatch(
                r"\d{1,2}/\d{1,2}/\d{2,4}", line.ntext[found.start : found.end].replace(" ", "")
            ):
                if found.month_first:
                    month_first_votes += 1
                else:
                    day_first_votes += 1
        if re.search(
            r"(?<![a-z])(?:january|february|march|april|may|june|july|august|september|october"
            r"|november|december)\s+\d{1,2},?\s+\d{4}",
            line.ntext,
        ):
            month_first_votes += 1
        english += len(
            re.findall(
                r"(?<![a-z])(?:invoice|total|amount|date|due|the|and|tax)"
                r"(?![a-z])",
                line.ntext,
            )
        )
        german_french_dutch += len(
            re.findall(
                r"(?<![a-z])(?:rechnung|betrag|datum|und|der|die|facture|montant|le|la|les|et"
                r"|factuur|bedrag|het|een|en)(?![a-z])",
                line.ntext,
            )
        )
    if month_first_votes != day_first_votes:
        return month_first_votes > day_first_votes
    dollars = any("$" in w.text for line in doc.lines for w in line.words)
    return english > german_french_dutch and dollars
