"""Page geometry for the rules: the values next to a label, to its right or under its cell."""

from __future__ import annotations

from collections.abc import Sequence

from pipeline.domain import Word
from pipeline.text.currency import is_currency_token
from pipeline.text.labels import LabelHit, is_filler
from pipeline.text.lines import Line


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
