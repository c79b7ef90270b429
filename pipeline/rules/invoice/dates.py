"""Finding the issue and due dates: by label, after the invoice number, or by position."""

from __future__ import annotations

import itertools
import re
from collections.abc import Sequence
from datetime import date
from typing import Any

from pipeline.domain import Word
from pipeline.rules.invoice.document import Candidate, Doc
from pipeline.rules.invoice.values import date_values
from pipeline.rules.layout import below_words, is_header, right_words
from pipeline.text.dates import find_dates
from pipeline.text.labels import LabelHit, is_filler
from pipeline.text.lines import Line


def find_invoice_dates(doc: Doc, number_line: Line | None) -> tuple[date | None, date | None]:
    claimed: set[tuple[int, date]] = set()
    issue: list[Candidate] = []
    due: list[Candidate] = []
    for hit in doc.hits_of("invoice_date", "due_date", "other_date"):
        hits_in_line = doc.hits[hit.line.index]
        words = right_words(hit, hits_in_line)
        values = date_values(words, doc.month_first)
        score = hit.spec.priority
        chosen: date | None = None
        if values and values[0][0] <= 3:
            chosen = values[0][1]
        elif hit.field != "other_date" and (reread := _reread_date(doc, hit, words)):
            chosen = reread
        elif is_header(hit, hits_in_line):
            for under in below_words(hit, doc.lines):
                under_values = date_values(under, doc.month_first)
                if under_values:
                    chosen = under_values[0][1]
                    score -= 0.3
                    break
        if chosen is None:
            continue
        claimed.add((hit.line.index, chosen))
        if hit.field == "invoice_date":
            if doc.rel_y(hit.line) > 0.88:
                score -= 1.0  # a printed timestamp in the footer, not the issue date
            issue.append(Candidate(chosen, score, hit.line.index, "label"))
        elif hit.field == "due_date":
            due.append(Candidate(chosen, score, hit.line.index, "label"))
    # "Invoice RE-2017/505 of 09.05.2017": a date right after the number is the issue date.
    if number_line is not None:
        match = re.search(
            r"(?<![a-z])(?:vom|von|du|of|dated|van|from|le|dd\.?|del)(?:\s+(.+))?$",
            number_line.ntext,
        )
        if match:
            rest = match.group(1) or ""
            after = number_line
            if not rest:  # "Nr. 01.234 vom" with the date wrapped onto the next line
                nxt = next((ln for ln in doc.lines if ln.index == number_line.index + 1), None)
                if nxt is not None and nxt.page == number_line.page:
                    rest, after = nxt.ntext, nxt
            found = find_dates(rest, month_first=doc.month_first)
            if found and found[0].start == 0:
                issue.append(Candidate(found[0].value, 3.2, after.index, "after-number"))
                claimed.add((after.index, found[0].value))
    # Service periods ("vom 01.11. bis 30.11.", "du ... au ...") are neither date.
    for line in doc.lines:
        dates = find_dates(line.ntext, month_first=doc.month_first)
        for first, second in itertools.pairwise(dates):
            between = line.ntext[first.end : second.start].strip()
            if re.fullmatch(r"(?:bis|au|to|until|tot|t/m|-|–|—|a)", between):
                claimed.add((line.index, first.value))
                claimed.add((line.index, second.value))
    if not issue:
        # Unlabelled: the first free date near the top of the first page.
        for line in doc.lines:
            if line.page != 0:
                break
            for free in find_dates(line.ntext, month_first=doc.month_first):
                if (line.index, free.value) in claimed:
                    continue
                rel = doc.rel_y(line)
                issue.append(Candidate(free.value, 1.0 - rel, line.index, "position"))
    invoice_date = _best(issue)
    if issue:
        doc.evidence["invoice_date"] = max(c.score for c in issue)
    due_date = _best(due)
    if due:
        doc.evidence["due_date"] = max(c.score for c in due)
    if invoice_date and due_date and due_date < invoice_date:
        due_date = None
    return invoice_date, due_date


_DATE_CHARS = "0123456789./-"


def _reread_date(doc: Doc, hit: LabelHit, words: Sequence[Word]) -> date | None:
    """OCR again the digits right after a date label when they did not read as a date."""
    if doc.reread is None:
        return None
    run: list[Word] = []
    for word in words:
        if not run and is_filler(word.text):
            continue
        if not any(c.isdigit() for c in word.text) and not re.fullmatch(
            r"[./,\-„\"'’]+", word.text
        ):
            break
        run.append(word)
        if len(run) >= 5:
            break
    if sum(c.isdigit() for w in run for c in w.text) < 4:
        return None
    box = (
        min(w.x0 for w in run),
        min(w.y0 for w in run),
        max(w.x1 for w in run),
        max(w.y1 for w in run),
    )
    text = doc.reread(hit.line.page, box, _DATE_CHARS)
    found = find_dates(text, month_first=doc.month_first)
    return found[0].value if found else None


def _best(candidates: list[Candidate]) -> Any:
    if not candidates:
        return None
    return max(candidates, key=lambda c: (c.score, -c.line)).value
