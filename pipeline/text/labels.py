"""Label phrases (a schema's vocabulary) and finding them in a line of normalised text."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from pipeline.text.lines import Line
from pipeline.text.normalise import norm


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
