"""Line grouping: positioned words into the visual lines both the rules and grounding read.

Words are grouped into lines by vertical overlap (across columns); a line splits into
segments (one table cell or one column's text each) at gaps wider than its height.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from pipeline.domain import Word
from pipeline.text.normalise import norm


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


def make_line(words: Iterable[Word], page: int, index: int = 0) -> Line:
    """A line of these words, left to right."""
    line = Line(page=page, words=list(words), index=index)
    _finish(line)
    return line


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


def group_line_indexes(words: Sequence[Word]) -> list[list[int]]:
    """Words into lines by vertical overlap, as indexes into `words`, each line left to right
    and the lines top to bottom. A word joins the line whose band it overlaps most (at least
    half of the smaller height) unless it would overlap a word already there."""
    order = sorted(
        (i for i, w in enumerate(words) if w.text.strip() and w.y1 > w.y0),
        key=lambda i: ((words[i].y0 + words[i].y1) / 2, words[i].x0),
    )
    # Per line: members, band [y0, y1], and the x extent of its words (a word wholly right
    # or left of it cannot clash with any of them).
    members: list[list[int]] = []
    bands: list[list[float]] = []
    extents: list[list[float]] = []
    for i in order:
        word = words[i]
        height = word.y1 - word.y0
        best: tuple[float, int] | None = None
        for n in range(len(members) - 1, max(-1, len(members) - 12), -1):
            band = bands[n]
            overlap = min(band[1], word.y1) - max(band[0], word.y0)
            if overlap < 0.5 * min(height, band[1] - band[0]):
                continue
            extent = extents[n]
            if (
                word.x1 > extent[0]
                and word.x0 < extent[1]
                and any(_clash(words[j], word) for j in members[n])
            ):
                continue
            if best is None or overlap > best[0]:
                best = (overlap, n)
        if best is None:
            members.append([i])
            bands.append([word.y0, word.y1])
            extents.append([word.x0, word.x1])
        else:
            n = best[1]
            members[n].append(i)
            band, extent = bands[n], extents[n]
            count = len(members[n])
            # The band follows the running mean so a tall word does not swallow neighbours.
            band[0] += (word.y0 - band[0]) / count
            band[1] += (word.y1 - band[1]) / count
            extent[0], extent[1] = min(extent[0], word.x0), max(extent[1], word.x1)
    result = [sorted(line, key=lambda j: words[j].x0) for line in members]

    def place(line: list[int]) -> tuple[float, float]:
        y0 = statistics.median([words[j].y0 for j in line])
        y1 = statistics.median([words[j].y1 for j in line])
        return (y0 + y1) / 2, words[line[0]].x0

    result.sort(key=place)
    return result


def group_lines(words: Iterable[Word], page: int) -> list[Line]:
    """Words into `Line`s (see `group_line_indexes`)."""
    listed = list(words)
    result = [
        Line(page=page, words=[listed[i] for i in members])
        for members in group_line_indexes(listed)
    ]
    for line in result:
        _finish(line)
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


def page_text_height(lines: Sequence[Line]) -> float:
    heights = [ln.height for ln in lines]
    return statistics.median(heights) if heights else 10.0
