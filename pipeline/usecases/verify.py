"""Verification beyond the schema: required fields, the extractor's own doubts, business rules
and grounding decide done vs needs_review."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from pipeline.checks import RuleFailure, run_rules
from pipeline.grounding import HasWords, ground, ground_chunks
from pipeline.schemas import SchemaSpec

# A value the extractor itself rates below this (0..1) is not trusted without a look.
WEAK_CONFIDENCE = 0.5


@dataclass(frozen=True, slots=True)
class Verdict:
    failures: list[RuleFailure]
    grounding: dict[str, Any]
    ungrounded: list[str]
    missing: list[str] = field(default_factory=list)  # required fields without a value
    weak: dict[str, float] = field(default_factory=dict)  # field -> the extractor's confidence
    notes: list[str] = field(default_factory=list)  # the extractor's own doubts

    @property
    def reasons(self) -> list[str]:
        return (
            [f"missing: {name} is required and was not found" for name in self.missing]
            + [
                f"weak: {name} was read with confidence {score:.2f} (below {WEAK_CONFIDENCE:.2f})"
                for name, score in self.weak.items()
            ]
            + [f"extractor: {note}" for note in self.notes]
            + [f"rule {f.rule}: {f.message}" for f in self.failures]
            + [f"ungrounded: {path} was not found on any page" for path in self.ungrounded]
        )


@dataclass(frozen=True, slots=True)
class ChunkedPages:
    """A document's pages read chunk by chunk in page order, anew for every verification:
    a long document's words are never all in memory at once."""

    count: int
    read: Callable[[], Iterable[Iterable[HasWords]]]

    def __len__(self) -> int:
        return self.count


def missing_required(schema: SchemaSpec, data: Mapping[str, Any]) -> list[str]:
    """The schema's required fields that have no value (null, blank or an empty list)."""
    missing = []
    for name in schema.required:
        value = data.get(name)
        blank = isinstance(value, str) and not value.strip()
        if value is None or blank or (isinstance(value, list | dict) and not value):
            missing.append(name)
    return missing


def verify(
    schema: SchemaSpec,
    data: dict[str, Any],
    pages: Sequence[HasWords] | ChunkedPages,
    *,
    confidence: Mapping[str, float] | None = None,
    notes: Sequence[str] = (),
) -> Verdict:
    if len(pages) == 0:
        # An XML e-invoice: the data is the document, there is no page to look values up in.
        return Verdict(failures=run_rules(schema.rules, data), grounding={}, ungrounded=[])
    if isinstance(pages, ChunkedPages):
        grounding = ground_chunks(data, pages.read(), vocabulary=schema.vocabulary)
    else:
        grounding = ground(data, pages, vocabulary=schema.vocabulary)
    weak = {
        name: score
        for name, score in (confidence or {}).items()
        if data.get(name) is not None and score < WEAK_CONFIDENCE
    }
    return Verdict(
        failures=run_rules(schema.rules, data),
        grounding=grounding.to_json(),
        ungrounded=grounding.ungrounded(),
        missing=missing_required(schema, data),
        weak=weak,
        notes=list(notes),
    )
