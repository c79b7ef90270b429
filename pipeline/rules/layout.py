"""Page geometry for the rules: lines and cells of words, labels, and the values next to them.

Words are grouped into lines by vertical overlap (across columns), lines into segments at
column-wide gaps; a label's value is read to its right on the same line or under its cell.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.domain import Word
from pipeline.rules.text import is_currency_token, norm


@dataclass(slots=True)
class Line:
    """Words on one page that share a baseline, left to right, possibly across columns."""

    page: int
    words: list[Word]
    index: int = 0  # position in the document's reading order
    text: str = ""
    ntext: str = ""  # normalised text; word i spans nspans[i]
    nspans: list[tuple[int, int]] = field(default_factory=list)

    @property
    def x0(self) -> float:
        return self.words[0].x0

    @property
    def x1(self) -> float:
        return max(w.x1 for w in self.words)

    @property
    def y0(self) -> float:
        return statistics.median(w.y0 for w in self.words)

    @property
    def y1(self) -> float:
        return statistics.median(w.y1 for w in self.words)

    @property
    def height(self) -> float:
        return max(self.y1 - self.y0, 1.0)

    def words_between(self, start: int, end: int) -> str:
        return " ".join(w.text for w in self.words[start:end])

    def word_at(self, offset: int) -> int:
        """Index of the word that contains normalised-text offset `offset`."""
        for i, (_start, end) in enumerate(self.nspans):
            if offset < end:
                return i
        return len(self.nspans) - 1

    def gap_before(self, i: int) -> float:
        return self.words[i].x0 - self.words[i - 1].x1 if i > 0 else 0.0

    def segments(self, factor: float = 1.2) -> list[tuple[int, int]]:
        """Runs of words separated by less than `factor` line heights: one table cell or one
        column's text each."""
        spans: list[tuple[int, int]] = []
        start = 0
        for i in range(1, len(self.words)):
            if self.gap_before(i) > factor * self.height:
                spans.append((start, i))
                start = i
        spans.append((start, len(self.words)))
        return spans

    def segment_of(self, i: int, factor: float = 1.2) -> tuple[int, int]:
        for start, end in self.segments(factor):
            if start <= i < end:
                return start, end
        return i, i + 1


@dataclass(frozen=True, slots=True)
class Page:
    index: int
    width: float
    height: float
    lines: list[Line]


def _finish(line: Line) -> None:
    line.words.sort(key=lambda w: w.x0)
    line.text = " ".join(w.text for w in line.words)
    parts: list[str] = []
    spans: list[tuple[int, int]] = []
    offset = 0
    for word in line.words:
        normalised = norm(word.text)
        spans.append((offset, offset + len(normalised)))
        parts.append(normalised)
        offset += len(normalised) + 1
    line.ntext = " ".join(parts)
    line.nspans = spans


def _clash(a: Word, b: Word) -> bool:
    """Two words too much on top of each other to sit on one line. OCR boxes of neighbours
    touch or overlap a little (italics, a colon after a word); stacked words overlap a lot."""
    if not any(c.isalnum() for c in a.text) or not any(c.isalnum() for c in b.text):
        return False  # a stray ":" box overlapping its label still belongs to the line
    overlap = min(a.x1, b.x1) - max(a.x0, b.x0)
    return overlap > 0.3 * min(a.x1 - a.x0, b.x1 - b.x0) and overlap > 0.5


def group_lines(words: Iterable[Word], page: int) -> list[Line]:
    """Words into lines by vertical overlap; a word joins the line whose band it overlaps most
    (at least half of the smaller height) unless it would overlap a word already there."""
    ordered = sorted(
        (w for w in words if w.text.strip() and w.y1 > w.y0),
        key=lambda w: ((w.y0 + w.y1) / 2, w.x0),
    )
    lines: list[tuple[Line, list[float]]] = []  # line with its band [y0, y1]
    for word in ordered:
        height = word.y1 - word.y0
        best: tuple[float, int] | None = None
        for i in range(len(lines) - 1, max(-1, len(lines) - 12), -1):
            line, band = lines[i]
            overlap = min(band[1], word.y1) - max(band[0], word.y0)
            need = 0.5 * min(height, band[1] - band[0])
            if overlap < need:
                continue
            if any(_clash(w, word) for w in line.words):
                continue
            if best is None or overlap > best[0]:
                best = (overlap, i)
        if best is None:
            lines.append((Line(page=page, words=[word]), [word.y0, word.y1]))
        else:
            line, band = lines[best[1]]
            line.words.append(word)
            count = len(line.words)
            # The band follows the running mean so a tall word does not swallow neighbours.
            band[0] += (word.y0 - band[0]) / count
            band[1] += (word.y1 - band[1]) / count
    result = [line for line, _ in lines]
    for line in result:
        _finish(line)
    result.sort(key=lambda ln: ((ln.y0 + ln.y1) / 2, ln.x0))
    return result


def build_pages(pages: Sequence[tuple[Sequence[Word], float, float]]) -> list[Page]:
    """Pages of (words, width, height) into lines numbered in reading order."""
    built: list[Page] = []
    counter = 0
    for index, (words, width, height) in enumerate(pages):
        lines = group_lines(words, index)
        for line in lines:
            line.index = counter
            counter += 1
        built.append(Page(index=index, width=width, height=height, lines=lines))
    return built


# --- labels --------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class LabelSpec:
    """A label phrase: the field it names, how strongly, and a regex over normalised text."""

    field: str
    priority: float
    pattern: str
    kind: str = "value"

    def compiled(self) -> re.Pattern[str]:
        return _compile(self.pattern)


_CACHE: dict[str, re.Pattern[str]] = {}


def _compile(pattern: str) -> re.Pattern[str]:
    found = _CACHE.get(pattern)
    if found is None:
        found = re.compile(rf"(?<![a-z0-9])(?:{pattern})(?![a-z])")
        _CACHE[pattern] = found
    return found


@dataclass(frozen=True, slots=True)
class LabelHit:
    spec: LabelSpec
    line: Line
    start: int  # first word of the label
    end: int  # one past the last word of the label
    char_end: int  # end of the match in line.ntext

    @property
    def field(self) -> str:
        return self.spec.field

    @property
    def x0(self) -> float:
        return self.line.words[self.start].x0

    @property
    def x1(self) -> float:
        return self.line.words[self.end - 1].x1


def find_labels(line: Line, specs: Sequence[LabelSpec]) -> list[LabelHit]:
    """Non-overlapping label matches in a line: the longest phrase wins, then the priority."""
    # Try every word start, not finditer: its leftmost matches would hide overlapping ones
    # ("invoice date due date" must offer "due date" even though "date due" matches first).
    starts = [i for i in range(len(line.ntext)) if i == 0 or not line.ntext[i - 1].isalnum()]
    raw: list[tuple[int, int, LabelSpec]] = []
    for spec in specs:
        pattern = spec.compiled()
        for start in starts:
            match = pattern.match(line.ntext, start)
            if match and match.end() > match.start():
                raw.append((match.start(), match.end(), spec))
    raw.sort(key=lambda m: (-(m[1] - m[0]), -m[2].priority, m[0]))
    chosen: list[tuple[int, int, LabelSpec]] = []
    for start, end, spec in raw:
        if all(end <= s or start >= e for s, e, _ in chosen):
            chosen.append((start, end, spec))
    chosen.sort(key=lambda m: m[0])
    hits = []
    for start, end, spec in chosen:
        first = line.word_at(start)
        last = line.word_at(max(start, end - 1))
        hits.append(LabelHit(spec, line, first, last + 1, end))
    return hits


# Words that sit between a label and its value without being either ("Invoice No. : 123").
_FILLER = re.compile(r"^(?:[:#.\-–=/|*]+|n[°o*º]\.?|no\.?|nr\.?|number|nummer|numero|num\.?)$")


def is_filler(text: str) -> bool:
    return bool(_FILLER.match(norm(text)))


def right_words(hit: LabelHit, hits_in_line: Sequence[LabelHit]) -> list[Word]:
    """Words after the label on its line, up to the next label."""
    stop = len(hit.line.words)
    for other in hits_in_line:
        if other.start >= hit.end and other is not hit:
            stop = min(stop, other.start)
    start = hit.end
    # A label that ends inside a word ("Total:123") leaves the rest of the word as the value.
    last_span = hit.line.nspans[hit.end - 1]
    if hit.char_end < last_span[1]:
        word = hit.line.words[hit.end - 1]
        rest = word.text[hit.char_end - last_span[0] :].lstrip(":#. ")
        if rest:
            return [
                Word(rest, word.x0, word.y0, word.x1, word.y1, word.block, word.line),
                *hit.line.words[start:stop],
            ]
    return hit.line.words[start:stop]


def is_header(hit: LabelHit, hits_in_line: Sequence[LabelHit]) -> bool:
    """True when nothing but fillers follows the label in its cell: the value is below it."""
    line = hit.line
    for i in range(hit.end, len(line.words)):
        if line.gap_before(i) > 1.2 * line.height:
            return True
        if any(other.start == i for other in hits_in_line):
            return True
        if not is_filler(line.words[i].text) and not is_currency_token(line.words[i].text):
            return False
    return True


def cell_span(hit: LabelHit) -> tuple[float, float]:
    """Horizontal extent of the label's cell (the label plus adjacent header words)."""
    start, end = hit.line.segment_of(hit.start)
    end = max(end, hit.end)
    return hit.line.words[start].x0, max(w.x1 for w in hit.line.words[start:end])


def below_words(
    hit: LabelHit, lines: Sequence[Line], *, max_gap: float = 2.6, max_lines: int = 3
) -> list[list[Word]]:
    """Words under the label's cell in the next lines of the same page (nearest first); the
    caller takes the first that holds a value, so a ruling of dashes does not hide it."""
    x0, x1 = cell_span(hit)
    tolerance = 0.3 * hit.line.height
    found: list[list[Word]] = []
    for line in lines:
        if line.page != hit.line.page or line.index <= hit.line.index:
            continue
        if line.y0 - hit.line.y1 > max_gap * hit.line.height * (len(found) + 1):
            break
        under = [w for w in line.words if w.x0 < x1 + tolerance and w.x1 > x0 - tolerance]
        if under:
            found.append(under)
            if len(found) >= max_lines:
                break
    return found


def page_text_height(lines: Sequence[Line]) -> float:
    heights = [ln.height for ln in lines]
    return statistics.median(heights) if heights else 10.0
