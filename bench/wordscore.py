"""Word accuracy of an OCR reading against the text it was rendered from: character and word
error rates (CER, WER).

Both sides are positioned words. Each is put in reading order the same way (visual lines from
the words' vertical centres, left to right), so the score measures reading, not the order in
which a PDF happens to store its text. CER = character edits (insert, delete, substitute) to
turn the reading into the reference ÷ reference characters; WER the same over words.
Whitespace is normalised; case, accents and punctuation inside words count. Tokens with no
letter or digit ("------" rules on a receipt, a lone "|") are left out on both sides: a
38-dash rule read as "—————" would otherwise weigh as much as a line of text.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from rapidfuzz.distance import Levenshtein

Box = tuple[float, float, float, float, str]  # x0, y0, x1, y1, text


def reading_order(words: Iterable[Box]) -> str:
    """Lines of text: words whose vertical centres are within half a word height of the line's
    first word share a line; lines top to bottom, words left to right."""
    items = sorted(
        ((w[1] + w[3]) / 2, max(w[3] - w[1], 1e-6), w[0], w[4].strip())
        for w in words
        if w[4].strip()
    )
    lines: list[list[tuple[float, str]]] = []
    ref_y = ref_h = 0.0
    for centre, height, x0, text in items:
        if lines and abs(centre - ref_y) <= 0.5 * min(height, ref_h):
            lines[-1].append((x0, text))
        else:
            lines.append([(x0, text)])
            ref_y, ref_h = centre, height
    return "\n".join(" ".join(t for _, t in sorted(line)) for line in lines)


@dataclass(frozen=True, slots=True)
class Score:
    char_edits: int
    chars: int
    word_edits: int
    words: int

    @property
    def cer(self) -> float:
        return self.char_edits / self.chars if self.chars else 0.0

    @property
    def wer(self) -> float:
        return self.word_edits / self.words if self.words else 0.0

    def __add__(self, other: Score) -> Score:
        return Score(
            self.char_edits + other.char_edits,
            self.chars + other.chars,
            self.word_edits + other.word_edits,
            self.words + other.words,
        )


def _tokens(text: str) -> list[str]:
    return [t for t in text.split() if any(c.isalnum() for c in t)]


def score(reference: str, reading: str) -> Score:
    """Edits from `reading` to `reference`, in characters (lines joined by one space) and in
    words."""
    ref_words, got_words = _tokens(reference), _tokens(reading)
    ref_text, got_text = " ".join(ref_words), " ".join(got_words)
    return Score(
        char_edits=Levenshtein.distance(ref_text, got_text),
        chars=len(ref_text),
        word_edits=Levenshtein.distance(ref_words, got_words),
        words=len(ref_words),
    )


def score_pages(reference: Sequence[Iterable[Box]], reading: Sequence[Iterable[Box]]) -> Score:
    """The sum over pages (a page missing from `reading` counts as read empty)."""
    total = Score(0, 0, 0, 0)
    for n, ref in enumerate(reference):
        got = reading[n] if n < len(reading) else ()
        total = total + score(reading_order(ref), reading_order(got))
    return total
