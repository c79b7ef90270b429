"""Verification beyond the schema: business rules and grounding decide done vs needs_review."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.checks import RuleFailure, run_rules
from pipeline.domain import PageContent
from pipeline.grounding import ground
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


def verify(schema: SchemaSpec, data: dict[str, Any], pages: Sequence[PageContent]) -> Verdict:
    grounding = ground(data, pages)
    return Verdict(
        failures=run_rules(schema.rules, data),
        grounding=grounding.to_json(),
        ungrounded=grounding.ungrounded(),
    )
