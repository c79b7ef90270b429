"""Whether a page's own text layer is worth reading, or OCR of its image reads it better."""

from __future__ import annotations

import unicodedata
from collections.abc import Sequence

from pipeline.domain import Word
from pipeline.pages import usable_text_layer

# A scanner's OCR layer puts Cyrillic and Greek look-alikes into Latin text ("ΗΑ007",
# "Раде:1", "mOTEL ОПЕ"); a page in Russian or Greek has them in most words instead.
_FOREIGN_MIN, _FOREIGN_MAX = 0.01, 0.3
# Designed pages have a few long words (URLs, URNs, file names): under a tenth of them.
_GLUED_MAX = 0.1


def _foreign(word: str) -> bool:
    return any(unicodedata.name(c, "").startswith(("CYRILLIC", "GREEK")) for c in word)


def look_alike_share(words: Sequence[Word]) -> float:
    """Share of the words with letters that hold a Cyrillic or Greek letter."""
    lettered = [w.text for w in words if any(c.isalpha() for c in w.text)]
    if not lettered:
        return 0.0
    return sum(1 for text in lettered if _foreign(text)) / len(lettered)


def glued_share(words: Sequence[Word]) -> float:
    """Share of words of 20 characters or more, mostly letters: a scanner's OCR layer that
    lost its spaces ("HamptonbyHiltonHamburg") reads as one long word per phrase."""
    if not words:
        return 0.0
    glued = sum(1 for w in words if len(w.text) >= 20 and sum(c.isalpha() for c in w.text) >= 15)
    return glued / len(words)


def trust_text_layer(words: Sequence[Word]) -> bool:
    """True when the page's own words can be read as they are: enough readable words, and not
    a scanner's OCR layer sprinkled with look-alike letters of other scripts or run together
    without spaces."""
    if not usable_text_layer(words):
        return False
    if glued_share(words) > _GLUED_MAX:
        return False
    return not _FOREIGN_MIN <= look_alike_share(words) <= _FOREIGN_MAX
