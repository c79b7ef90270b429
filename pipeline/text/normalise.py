"""Normalising printed text: case and accents folded, OCR look-alike characters mapped back."""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

# Cyrillic and Greek capitals and small letters that OCR engines put into Latin words ("ΗΑ007"
# for "HA007", "mOTEL" with a Cyrillic "О"): mapped to the Latin letter they look like.
_HOMOGLYPHS = str.maketrans(
    {
        **dict(zip("АВЕКМНОРСТХУІЅЈаеорсухіјѕԁ", "ABEKMHOPCTXYISJaeopcyxijsd", strict=True)),
        **dict(zip("ΑΒΕΖΗΙΚΜΝΟΡΤΥΧοΙνκι", "ABEZHIKMNOPTYXoIvki", strict=True)),
    }
)


def latin(text: str) -> str:
    """`text` with Cyrillic and Greek look-alikes of Latin letters replaced by those letters."""
    return text.translate(_HOMOGLYPHS)


def fold(text: str) -> str:
    """Casefolded without accents: OCR drops accents, and people type them inconsistently."""
    decomposed = unicodedata.normalize("NFKD", latin(text))
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def norm(text: str) -> str:
    """`fold`, with typographic apostrophes made plain: the form label patterns are written in."""
    return fold(text).replace("’", "'").replace("`", "'")


_ALNUM_RUN = re.compile(r"[^\W_]+")


@lru_cache(maxsize=16384)
def alnum_parts(text: str) -> tuple[str, ...]:
    """Alphanumeric runs of a word: punctuation, at the edges or inside, never decides a match."""
    return tuple(_ALNUM_RUN.findall(fold(text)))


def alnum_key(text: str) -> str:
    """The word's letters and digits only, folded: what two printings of one value share."""
    return "".join(alnum_parts(text))


# Letters OCR reads for digits, over folded text; only for values that contain digits.
DIGIT_LOOKALIKES = str.maketrans({"o": "0", "i": "1", "l": "1", "s": "5", "b": "8", "z": "2"})
# The same over text as printed (case kept), for a token that is mostly digits.
OCR_DIGITS = str.maketrans(
    {"O": "0", "o": "0", "D": "0", "l": "1", "I": "1", "|": "1", "S": "5", "B": "8"}
)


def digits(text: str) -> str:
    return "".join(c for c in text if c.isdigit())


def within_one_edit(a: str, b: str) -> bool:
    """Damerau-Levenshtein distance ≤ 1 (one substitution, insertion, deletion or swap)."""
    if a == b:
        return True
    la, lb = len(a), len(b)
    if abs(la - lb) > 1:
        return False
    if la == lb:
        diffs = [i for i in range(la) if a[i] != b[i]]
        if len(diffs) == 1:
            return True
        return (
            len(diffs) == 2
            and diffs[1] == diffs[0] + 1
            and a[diffs[0]] == b[diffs[1]]
            and a[diffs[1]] == b[diffs[0]]
        )
    if la > lb:
        a, b = b, a
    i = 0
    while i < len(a) and a[i] == b[i]:
        i += 1
    return a[i:] == b[i + 1 :]
