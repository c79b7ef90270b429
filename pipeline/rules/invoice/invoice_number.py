"""Finding the invoice number: after its label, under its header cell, or under the title."""

from __future__ import annotations

import re
from collections.abc import Sequence

from pipeline.domain import Word
from pipeline.rules.invoice.document import Doc
from pipeline.rules.layout import below_words, is_header, right_words
from pipeline.text.amounts import parse_amount
from pipeline.text.dates import find_dates
from pipeline.text.identifiers import clean_identifier
from pipeline.text.labels import is_filler
from pipeline.text.lines import Line
from pipeline.text.normalise import norm


def _looks_like_number(token: str, title: bool) -> str | None:
    """`token` as an invoice number, or None when it is a date, a price or a bare position."""
    ident = clean_identifier(token)
    if ident is None or find_dates(ident):
        return None
    amount = parse_amount(ident)
    if amount is not None and amount.decimals > 0:
        return None  # "100,00" is a price
    if title and re.fullmatch(r"\d{1,2}", ident):
        return None  # "Invoice 2" is more often "page 2" or a position than a number
    return ident


def find_invoice_number(doc: Doc) -> tuple[str | None, Line | None]:
    candidates: list[tuple[float, int, str, Line]] = []
    for hit in doc.hits_of("invoice_number"):
        hits_in_line = doc.hits[hit.line.index]
        title = hit.spec.kind == "title"
        words = right_words(hit, hits_in_line)
        value: str | None = None
        for position, word in enumerate(words):
            if is_filler(word.text):
                continue
            if title and (position > 2 or word.x0 - hit.x1 > 4 * hit.line.height):
                break
            value = _looks_like_number(word.text, title)
            if value is not None:
                value = _continued_number(value, words[position + 1 :])
            break
        score = hit.spec.priority
        if value is None and not title and is_header(hit, hits_in_line):
            for under in below_words(hit, doc.lines):
                for word in under:
                    value = _looks_like_number(word.text, False)
                    if value:
                        score -= 0.3
                        break
                if value:
                    break
        if value is None:
            continue
        if hit.line.page == 0:
            score += 0.2
        if doc.rel_y(hit.line) < 0.5:
            score += 0.2
        candidates.append((score, -hit.line.index, value, hit.line))
    if not candidates:
        candidates = _number_under_title(doc)
    if not candidates:
        return None, None
    best = max(candidates, key=lambda c: (c[0], c[1]))
    doc.evidence["invoice_number"] = best[0]
    return best[2], best[3]


def _continued_number(value: str, rest: Sequence[Word]) -> str:
    """A number printed in groups joined by dashes or slashes with spaces around them
    ("HA007 - 123123 - 37816396", "083 -72561"): the groups belong to it."""
    parts = [value]
    i = 0
    while i < len(rest):
        word = rest[i]
        text = word.text.strip()
        if text in {"-", "–", "/"} and i + 1 < len(rest):
            nxt = rest[i + 1].text.strip()
            if re.fullmatch(r"[A-Za-z]{0,4}\d[\w\-/.]*", nxt) and not find_dates(nxt):
                parts += [text, nxt]
                i += 2
                continue
        elif re.fullmatch(r"[-–/]\d[\w\-/]*", text) and not find_dates(text):
            parts.append(text)
            i += 1
            continue
        break
    return " ".join(parts) if len(parts) > 1 else value


_PLAIN_NUMBER = re.compile(r"^(?:nummer|number|numero|no\.?|nr\.?|n°)\s*:?\s+(\S+)")


def _number_under_title(doc: Doc) -> list[tuple[float, int, str, Line]]:
    """A title ("Rechnung", "Invoice") with a plain "Nummer: 5501" / "No. 5501" in the same
    column just below it."""
    found: list[tuple[float, int, str, Line]] = []
    by_index = {line.index: line for line in doc.lines}
    for hit in doc.hits_of("invoice_number"):
        if hit.spec.kind != "title":
            continue
        for step in (1, 2, 3):
            line = by_index.get(hit.line.index + step)
            if line is None or line.page != hit.line.page:
                break
            for start, end in line.segments():
                x0, x1 = line.words[start].x0, line.words[end - 1].x1
                # Left-aligned under the title, or right-aligned with it.
                if min(abs(x0 - hit.x0), abs(x1 - hit.x1)) > 3 * line.height:
                    continue
                match = _PLAIN_NUMBER.match(norm(line.words_between(start, end)))
                value = _looks_like_number(match.group(1), False) if match else None
                if value:
                    found.append((1.0, -line.index, value, line))
    return found
