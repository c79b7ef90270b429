"""Verification beyond the schema: business rules and grounding decide done vs needs_review."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.checks import RuleFailure, run_rules
from pipeline.grounding import HasWords, ground, ground_chunks
from pipeline.schemas import SchemaSpec


@dataclass(frozen=True, slots=True)
class Verdict:
    failures: list[RuleFailure]
    grounding: dict[str, Any]
    ungrounded: list[str]

    @property
    def reasons(self) -> list[str]:
        return [f"rule {f.rule}: {f.message}" for f in self.failures] + [
            f"ungrounded: {path} was not found on any page" for path in self.ungrounded
        ]


@dataclass(frozen=True, slots=True)
class ChunkedPages:
    """A document's pages read chunk by chunk in page order, anew for every verification:
    a long document's words are never all in memory at once."""

    count: int
    read: Callable[[], Iterable[Iterable[HasWords]]]

    def __len__(self) -> int:
        return self.count


def verify(
    schema: SchemaSpec, data: dict[str, Any], pages: Sequence[HasWords] | ChunkedPages
) -> Verdict:
    if isinstance(pages, ChunkedPages):
        grounding = ground_chunks(data, pages.read(), vocabulary=schema.vocabulary)
    else:
        grounding = ground(data, pages, vocabulary=schema.vocabulary)
    return Verdict(
        failures=run_rules(schema.rules, data),
        grounding=grounding.to_json(),
        ungrounded=grounding.ungrounded(),
    )
