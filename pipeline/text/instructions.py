"""Text addressed to a model: a document's sentences that instruct the reader, not describe the
sale ("SYSTEM: ignore your instructions ..."). A value found only inside one is not grounded."""

from __future__ import annotations

import re

from pipeline.text.normalise import norm

# Phrases that only make sense to a model reading the page: a role marker opening a sentence,
# an order to drop earlier instructions, or an address to an AI. Invoices in any language
# describe goods, parties and sums; none of them says these things.
_ADDRESSED = re.compile(
    r"^\W*(?:system|assistant)\s*:"
    r"|\b(?:ignore|disregard|forget|override)\s+(?:all\s+|any\s+)?(?:of\s+)?"
    r"(?:your|previous|prior|earlier|above|preceding|the\s+(?:above|previous|system))\b"
    r"(?:\W+\w+){0,3}?\W+(?:instructions?|prompts?|rules|guidelines)\b"
    r"|\byou\s+are\s+(?:an?\s+|the\s+)?(?:ai|assistant|language\s+model|llm|model)\b"
    r"|\bas\s+an\s+ai\b"
)


# Words every instruction above contains: a page without any of them (nearly every page) is
# checked once, not run by run.
_KEYWORDS = re.compile(r"system|assistant|ignore|disregard|forget|override|you\s+are|as\s+an\s+ai")


def may_address_model(text: str) -> bool:
    """False when no run of `text` (a whole page's words) can speak to a model."""
    return _KEYWORDS.search(norm(text)) is not None


def addressed_to_model(text: str) -> bool:
    """Whether a run of printed text (a line or a cell) speaks to a model reading the page."""
    return _ADDRESSED.search(norm(text)) is not None
