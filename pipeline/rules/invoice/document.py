"""The analysed document the invoice rules read, and the candidate values they weigh."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.domain import Word
from pipeline.text.labels import LabelHit
from pipeline.text.lines import Line, Page

PageWords = tuple[Sequence[Word], float, float]  # words, width and height in points

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in points
# Re-read a region of a page by OCR, optionally limited to some characters: (page, box,
# charset) -> text. Only OCR'd pages have one; the rules call it when a value is garbled.
Reread = Callable[[int, Box, str | None], str]


@dataclass(slots=True)
class Doc:
    pages: list[Page]
    lines: list[Line]
    hits: dict[int, list[LabelHit]]
    month_first: bool = False
    text_height: float = 10.0
    reread: Reread | None = None
    # Field -> strength of the evidence for the value the rules chose, as a label priority
    # (3: a specific label; 2: a generic one; below 1.5: position or a guess).
    evidence: dict[str, float] = field(default_factory=dict)

    def hits_of(self, *fields: str) -> list[LabelHit]:
        return [h for line in self.lines for h in self.hits[line.index] if h.field in fields]

    def page_of(self, line: Line) -> Page:
        return self.pages[line.page]

    def rel_y(self, line: Line) -> float:
        page = self.page_of(line)
        return line.y0 / page.height if page.height else 0.0


@dataclass(slots=True)
class Candidate:
    value: Any
    score: float
    line: int  # line index in reading order
    source: str = ""
    where: tuple[int, Box] | None = None  # page and box the value was read from
