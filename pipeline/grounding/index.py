"""The page index: one page's words grouped once into lines and segments, with the lookups
(amounts, dates, keys, label words) each kind of value needs, built on first use."""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import pairwise
from typing import TypeAlias

from pipeline.domain import Word
from pipeline.grounding.result import Location
from pipeline.text.amounts import CENTS, amount_readings
from pipeline.text.dates import MONTHS, date_readings
from pipeline.text.instructions import addressed_to_model, may_address_model
from pipeline.text.lines import group_line_indexes
from pipeline.text.normalise import DIGIT_LOOKALIKES, alnum_parts, digits

LabelPatterns: TypeAlias = dict[str, tuple[re.Pattern[str], re.Pattern[str] | None]]

Span: TypeAlias = tuple[int, ...]  # word indexes on one page, in reading order


@dataclass(slots=True)
class _Segment:
    line: int
    words: list[int]  # left to right
    x0: float
    x1: float
    first_keyed: int | None  # first word with letters or digits


class PageIndex:
    """One page's words, indexed once: visual lines and segments (one cell or column run
    each), and lazily the lookups each kind of value needs."""

    def __init__(
        self, index: int, words: Sequence[Word], label_patterns: LabelPatterns | None = None
    ) -> None:
        self.index = index
        self.label_patterns = label_patterns or {}
        self._set_words([w for w in words if w.text.strip()])
        addressed = self._addressed_to_model()
        if addressed:
            # A value printed inside an instruction to the model is what an obeying model
            # would answer: it must not count as found on the page.
            self._set_words([w for i, w in enumerate(self.words) if i not in addressed])
        self._successors: dict[int, tuple[int, ...]] = {}
        self._starts: dict[bool, dict[str, list[tuple[int, int]]]] = {}
        self._folded: list[str] | None = None
        self._by_key: dict[str, list[int]] | None = None
        self._by_folded: dict[str, list[int]] | None = None
        self._by_shape: dict[tuple[int, str], list[int]] | None = None
        self._amounts: dict[Decimal, list[Span]] | None = None
        self._dates: dict[date, list[Span]] | None = None
        self._labels: dict[str, list[int]] = {}

    def _set_words(self, words: list[Word]) -> None:
        self.words = words
        self.parts = [alnum_parts(w.text) for w in words]
        self.keys = ["".join(p) for p in self.parts]
        self.has_digit = [any(c.isdigit() for c in k) for k in self.keys]
        self._heights = [max(w.y1 - w.y0, 1.0) for w in words]
        self._group()

    def _addressed_to_model(self) -> set[int]:
        """Words of the segments (cells, column runs) that speak to a model reading the page."""
        if not may_address_model(" ".join(w.text for w in self.words)):
            return set()
        return {
            i
            for seg in self.segments
            if addressed_to_model(" ".join(self.words[i].text for i in seg.words))
            for i in seg.words
        }

    # geometry

    def _group(self) -> None:
        words, heights = self.words, self._heights
        centre = [(w.y0 + w.y1) / 2 for w in words]
        # The rules' lines: the extractor and the verifier see the same lines on a page.
        self.lines = group_line_indexes(words)
        self.line_y = [sum(centre[i] for i in line) / len(line) for line in self.lines]
        self.line_of = [0] * len(words)
        self.pos_of = [0] * len(words)
        self.seg_of = [0] * len(words)
        self.rank = [0] * len(words)
        self.next_in_seg: list[int | None] = [None] * len(words)
        self.prev_in_seg: list[int | None] = [None] * len(words)
        self.segments: list[_Segment] = []
        rank = 0
        for n, line in enumerate(self.lines):
            current: list[int] = []
            for pos, i in enumerate(line):
                self.line_of[i], self.pos_of[i], self.rank[i] = n, pos, rank
                rank += 1
                if current:
                    prev = current[-1]
                    # A gap wider than about one line height separates table cells and columns.
                    if words[i].x0 - words[prev].x1 > 0.9 * max(heights[i], heights[prev]):
                        self._close(n, current)
                        current = []
                current.append(i)
            self._close(n, current)

    def _close(self, line: int, members: list[int]) -> None:
        keyed = [i for i in members if self.keys[i]]
        seg = _Segment(
            line=line,
            words=members,
            x0=min(self.words[i].x0 for i in members),
            x1=max(self.words[i].x1 for i in members),
            first_keyed=keyed[0] if keyed else None,
        )
        number = len(self.segments)
        self.segments.append(seg)
        for i in members:
            self.seg_of[i] = number
        for a, b in pairwise(keyed):
            self.next_in_seg[a], self.prev_in_seg[b] = b, a

    def successors(self, i: int) -> tuple[int, ...]:
        """Words a value may continue with after word i: the next word in its segment, or the
        start of the text below it (a value wrapped inside a cell or an address block)."""
        cached = self._successors.get(i)
        if cached is not None:
            return cached
        out: list[int] = []
        nxt = self.next_in_seg[i]
        if nxt is not None:
            out.append(nxt)
        word, h = self.words[i], self._heights[i]
        seg = self.segments[self.seg_of[i]]
        limit = self.line_y[self.line_of[i]] + 2.5 * h
        for n in range(self.line_of[i] + 1, len(self.lines)):
            if self.line_y[n] > limit:
                break
            line = self.lines[n]
            for pos, j in enumerate(line):
                if not self.keys[j] or j in out:
                    continue
                other = self.segments[self.seg_of[j]]
                if j == other.first_keyed and other.x0 <= seg.x1 + h and other.x1 >= seg.x0 - h:
                    out.append(j)
                    continue
                left = self.words[line[pos - 1]].x1 if pos else -math.inf
                w = self.words[j]
                if seg.x0 - 2 * h <= w.x0 <= word.x1 + h and left < seg.x0 - 0.5 * h:
                    out.append(j)
        result = tuple(out)
        self._successors[i] = result
        return result

    def near(self, a: int, b: int, skipped: int) -> bool:
        """Whether word b can follow word a in one printed text with `skipped` value tokens
        missing between them: further along a's line, or starting below within a's column."""
        wa, wb = self.words[a], self.words[b]
        h = max(self._heights[a], self._heights[b])
        la, lb = self.line_of[a], self.line_of[b]
        if la == lb:
            return self.pos_of[b] > self.pos_of[a] and wb.x0 - wa.x1 <= (skipped + 1) * 4 * h
        seg = self.segments[self.seg_of[a]]
        return (
            lb > la
            and self.line_y[lb] - self.line_y[la] <= (skipped + 1) * 2.5 * h
            and seg.x0 - 2 * h <= wb.x0 <= seg.x1 + 2 * h
        )

    def location(self, span: Span) -> Location:
        ws = [self.words[i] for i in span]
        return Location(
            page=self.index,
            bbox=(
                min(w.x0 for w in ws),
                min(w.y0 for w in ws),
                max(w.x1 for w in ws),
                max(w.y1 for w in ws),
            ),
            matched_text=" ".join(w.text for w in ws),
        )

    def span_y(self, span: Span) -> tuple[float, float]:
        return min(self.words[i].y0 for i in span), max(self.words[i].y1 for i in span)

    def height(self, span: Span) -> float:
        return max(self._heights[i] for i in span)

    # lookups, built on first use

    def folded(self) -> list[str]:
        if self._folded is None:
            self._folded = [k.translate(DIGIT_LOOKALIKES) for k in self.keys]
        return self._folded

    def starts(self, folded: bool) -> dict[str, list[tuple[int, int]]]:
        """First character -> (word, offset) for every place a value may start: a word's
        beginning or, after punctuation inside it, one of its later parts."""
        found = self._starts.get(folded)
        if found is None:
            found = {}
            keys = self.folded() if folded else self.keys
            for i, parts in enumerate(self.parts):
                offset = 0
                for part in parts:
                    found.setdefault(keys[i][offset], []).append((i, offset))
                    offset += len(part)
            self._starts[folded] = found
        return found

    def ends(self, i: int) -> set[int]:
        offsets, total = set(), 0
        for part in self.parts[i]:
            total += len(part)
            offsets.add(total)
        return offsets

    def by_key(self) -> dict[str, list[int]]:
        if self._by_key is None:
            self._by_key = {}
            for i, k in enumerate(self.keys):
                if k:
                    self._by_key.setdefault(k, []).append(i)
        return self._by_key

    def by_folded(self) -> dict[str, list[int]]:
        if self._by_folded is None:
            self._by_folded = {}
            for i, k in enumerate(self.folded()):
                if k:
                    self._by_folded.setdefault(k, []).append(i)
        return self._by_folded

    def by_shape(self) -> dict[tuple[int, str], list[int]]:
        """(length, digits) -> words of five characters or more, for the one-edit match."""
        if self._by_shape is None:
            self._by_shape = {}
            for i, k in enumerate(self.keys):
                if len(k) >= 5:
                    self._by_shape.setdefault((len(k), digits(k)), []).append(i)
        return self._by_shape

    def amounts(self) -> dict[Decimal, list[Span]]:
        if self._amounts is None:
            index: dict[Decimal, list[Span]] = {}
            singles: list[tuple[Decimal, ...]] = []
            for i, w in enumerate(self.words):
                if not self.has_digit[i]:
                    singles.append(())
                    continue
                nxt = self.next_word(i)
                if nxt is not None and self.words[nxt].text.startswith("%"):
                    singles.append(())
                    continue
                values = amount_readings(w.text)
                singles.append(values)
                for v in values:
                    index.setdefault(v, []).append((i,))
            for line in self.lines:
                for a, b in pairwise(line):
                    wa, wb = self.words[a], self.words[b]
                    # "1 005,55": a thousands space is narrower than a word space.
                    if wb.x0 - wa.x1 > 0.6 * self._heights[a] or not re.fullmatch(
                        r"[-−(]?\D?\d{1,3}", wa.text
                    ):
                        continue
                    for v in amount_readings(f"{wa.text} {wb.text}"):
                        if v not in singles[a] and v not in singles[b]:
                            index.setdefault(v, []).append((a, b))
            self._amounts = index
        return self._amounts

    def has_cents(self, span: Span) -> bool:
        return any(CENTS.search(self.words[i].text) for i in span)

    def column_rank(self, span: Span) -> tuple[bool, bool, float]:
        """Orders a row's numbers for the leftmost-value rule: a bare integer starting the line
        is a position number, one after a word in its own cell belongs to that word ("BC: 3");
        both are worse than a number standing in a column of its own."""
        i = span[0]
        first = next((j for j in self.lines[self.line_of[i]] if self.keys[j]), None)
        position = span == (first,) and self.words[i].text.rstrip(".").isdigit()
        before = self.prev_in_seg[i]
        labelled = before is not None and not self.has_digit[before]
        return position, labelled, self.words[i].x0

    def next_word(self, i: int) -> int | None:
        line = self.lines[self.line_of[i]]
        pos = self.pos_of[i] + 1
        return line[pos] if pos < len(line) else None

    def dates(self) -> dict[date, list[Span]]:
        if self._dates is None:
            index: dict[date, list[Span]] = {}
            for seg in self.segments:
                members = seg.words
                for s, first in enumerate(members):
                    if not (self.has_digit[first] or self.keys[first] in MONTHS):
                        continue
                    for e in range(s, min(s + 5, len(members))):
                        if not self.has_digit[members[e]]:
                            continue
                        text = " ".join(self.words[i].text for i in members[s : e + 1])
                        for d in date_readings(text):
                            spans = index.setdefault(d, [])
                            span = tuple(members[s : e + 1])
                            # Keep the shortest run: "2026" after a full date adds nothing.
                            if not any(set(old) <= set(span) for old in spans):
                                spans.append(span)
            self._dates = index
        return self._dates

    def labels(self, name: str) -> list[int]:
        found = self._labels.get(name)
        if found is None:
            pattern, exclude = self.label_patterns.get(name, (None, None))
            found = []
            for i, k in enumerate(self.keys):
                if not k or pattern is None or not pattern.search(k):
                    continue
                near = (
                    k,
                    *(
                        self.keys[j]
                        for j in (self.prev_in_seg[i], self.next_in_seg[i])
                        if j is not None
                    ),
                )
                if exclude is None or not any(exclude.search(n) for n in near):
                    found.append(i)
            self._labels[name] = found
        return found


def label_distance(page: PageIndex, name: str, span: Span, loc: Location) -> int:
    """How far an occurrence sits from the nearest label word for the field, in words between
    them on the same line, or in lines down from a label above it in the same column. Labels
    do not follow their value, so words right of or below it do not count; with no label in
    sight the distance is large and reading order decides."""
    x0, y0, x1, _ = loc.bbox
    h = page.height(span)
    line, pos = page.line_of[span[0]], page.pos_of[span[0]]
    words = page.lines[line]
    best = 1000
    for i in page.labels(name):
        if i in span:
            return 0  # "Nr.2014-03": label and value in one word
        w = page.words[i]
        if page.line_of[i] == line and page.pos_of[i] < pos:
            between = words[page.pos_of[i] + 1 : pos]
            best = min(best, sum(1 for j in between if page.keys[j]))
        elif page.line_of[i] < line and w.x0 - 2 * h < x1 and w.x1 + 2 * h > x0:
            # Line spacing, not visual line numbers: other columns add lines in between.
            best = min(best, 1 + int(max(0.0, y0 - w.y1) / (1.5 * h)))
    return best
