"""Grounding: look every extracted value up in the page words, to catch values a model invented.

`index` indexes a page's words once (lines, segments, amounts, dates, label words); `search`
finds each value's occurrences chunk by chunk; `decision` picks the occurrence each value takes.
"""

from pipeline.grounding.result import (
    UNGROUNDED,
    Found,
    Grounding,
    HasWords,
    Location,
    PageWords,
    Ungrounded,
)
from pipeline.grounding.search import GroundingStream, ground, ground_chunks
from pipeline.schemas.vocabulary import ValueKind as Kind

__all__ = [
    "UNGROUNDED",
    "Found",
    "Grounding",
    "GroundingStream",
    "HasWords",
    "Kind",
    "Location",
    "PageWords",
    "Ungrounded",
    "ground",
    "ground_chunks",
]
