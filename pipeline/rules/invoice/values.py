"""Value readers for the invoice rules: amounts and dates in a run of words, amounts by a label."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal

from pipeline.domain import Word
from pipeline.rules.invoice.document import Candidate, Doc
from pipeline.rules.layout import below_words, is_header, right_words
from pipeline.text.amounts import ParsedAmount, parse_amount
from pipeline.text.currency import is_currency_token
from pipeline.text.dates import find_dates
from pipeline.text.labels import LabelHit, is_filler
from pipeline.text.normalise import norm


@dataclass(frozen=True, slots=True)
class Amount:
    """An amount found in a run of words."""

    index: int  # first word, in the run
    words: tuple[Word, ...]
    parsed: ParsedAmount
    currency_near: bool  # a currency printed with it or next to it

    @property
    def value(self) -> Decimal:
        return self.parsed.value

    @property
    def box(self) -> tuple[float, float, float, float]:
        return (
            min(w.x0 for w in self.words),
            min(w.y0 for w in self.words),
            max(w.x1 for w in self.words),
            max(w.y1 for w in self.words),
        )


def amounts_in(words: Sequence[Word]) -> list[Amount]:
    """Amounts printed in a run of words.

    Joins "1 005,55" split at a thousands space; skips percentages and bare integers that
    carry no currency (page numbers, quantities, postcodes).
    """
    found: list[Amount] = []
    i = 0
    while i < len(words):
        text = words[i].text
        width = 1
        if (
            i + 1 < len(words)
            and re.fullmatch(r"[-€$£]?\d{1,3}", text)
            and re.fullmatch(r"\d{3}(?:[.,]\d{1,2})?[-€$£]?", words[i + 1].text)
            and words[i + 1].x0 - words[i].x1 < 0.6 * (words[i].y1 - words[i].y0)
        ):
            text = text + " " + words[i + 1].text
            width = 2
        nxt = words[i + width].text if i + width < len(words) else ""
        if nxt.startswith("%"):
            i += width + 1
            continue
        parsed = parse_amount(text, ocr_fix=True)
        if parsed is None:
            i += 1
            continue
        prev = words[i - 1].text if i > 0 else ""
        currency_near = (
            parsed.currency is not None or is_currency_token(prev) or (is_currency_token(nxt))
        )
        if parsed.decimals == 0 and not currency_near:
            i += width
            continue
        found.append(Amount(i, tuple(words[i : i + width]), parsed, currency_near))
        i += width
    return found


def amount_candidates(doc: Doc, hit: LabelHit) -> list[Candidate]:
    hits_in_line = doc.hits[hit.line.index]
    out: list[Candidate] = []
    base = hit.spec.priority
    page = hit.line.page
    words = right_words(hit, hits_in_line)
    for rank, amount in enumerate(amounts_in(words)[:3]):
        skipped = sum(
            1
            for w in words[: amount.index]
            if not is_filler(w.text) and not is_currency_token(w.text)
        )
        out.append(
            Candidate(
                amount.value,
                base - 0.3 * rank - 0.1 * min(skipped, 5),
                hit.line.index,
                f"{hit.field}:right",
                (page, amount.box),
            )
        )
    if not out and is_header(hit, hits_in_line):
        for depth, under in enumerate(below_words(hit, doc.lines)):
            found = amounts_in(under)
            if found:
                out.append(
                    Candidate(
                        found[0].value,
                        base - 0.4 - 0.2 * depth,
                        hit.line.index,
                        f"{hit.field}:below",
                        (page, found[0].box),
                    )
                )
                break
    return out


def date_values(words: Sequence[Word], month_first: bool) -> list[tuple[int, date]]:
    """Dates in a run of words with the index of the word each starts in."""
    text = ""
    starts: list[int] = []
    for word in words:
        starts.append(len(text))
        text += norm(word.text) + " "
    out: list[tuple[int, date]] = []
    for found in find_dates(text, month_first=month_first):
        index = max(i for i, s in enumerate(starts) if s <= found.start)
        out.append((index, found.value))
    return out
