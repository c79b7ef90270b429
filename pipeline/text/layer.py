"""Whether a page's own text layer is worth reading, or OCR of its image reads it better."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from pipeline.domain import Word
from pipeline.pages import usable_text_layer

# A scanner's OCR layer puts Cyrillic and Greek look-alikes into Latin text ("ΗΑ007",
# "Раде:1", "mOTEL ОПЕ"); a page in Russian or Greek has them in most words instead.
_FOREIGN_MIN, _FOREIGN_MAX = 0.01, 0.3


def _foreign(word: str) -> bool:
    return any(unicodedata.name(c, "").startswith(("CYRILLIC", "GREEK")) for c in word)


def look_alike_share(words: Sequence[Word]) -> float:
    """Share of the words with letters that hold a Cyrillic or Greek letter."""
    lettered = [w.text for w in words if any(c.isalpha() for c in w.text)]
    if not lettered:
        return 0.0
    return sum(1 for text in lettered if _foreign(text)) / len(lettered)


def trust_text_layer(words: Sequence[Word]) -> bool:
    """True when the page's own words can be read as they are: enough readable words, and not
    a scanner's OCR layer sprinkled with look-alike letters of other scripts."""
    if not usable_text_layer(words):
        return False
    return not _FOREIGN_MIN <= look_alike_share(words) <= _FOREIGN_MAX
