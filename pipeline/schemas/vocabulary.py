"""What a schema's fields are called on a page: value kinds, label words and label phrases.

Grounding reads `kinds` (how a value is compared) and `label_words` (which printed words label
a field, to choose among several occurrences of one value); the offline rules read `phrases`
(multi-word labels in several languages, with the field each one names).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

from pipeline.text.labels import LabelSpec

ValueKind = Literal["text", "identifier", "amount", "quantity", "date", "time", "currency"]


@dataclass(frozen=True)
class Vocabulary:
    # Field name (as in the JSON, at any depth) -> how its value is compared to the page.
    kinds: Mapping[str, ValueKind] = field(default_factory=dict)
    # Field name -> regex over one folded word that labels the field ("total", "gesamt").
    label_words: Mapping[str, str] = field(default_factory=dict)
    # Field name -> regex: a label word is not one for the field when it, or a neighbour,
    # matches this ("Due Date" is no invoice date label).
    not_label_words: Mapping[str, str] = field(default_factory=dict)
    # Label phrases the offline rules read values next to.
    phrases: Sequence[LabelSpec] = ()

    @cached_property
    def label_patterns(self) -> dict[str, tuple[re.Pattern[str], re.Pattern[str] | None]]:
        return {
            name: (
                re.compile(pattern),
                re.compile(self.not_label_words[name]) if name in self.not_label_words else None,
            )
            for name, pattern in self.label_words.items()
        }

    def phrases_for(self, *fields: str) -> list[LabelSpec]:
        return [p for p in self.phrases if p.field in fields]


def kinds_from_json_schema(schema: Mapping[str, object]) -> dict[str, ValueKind]:
    """Value kinds a model's JSON Schema implies, by field name at any depth: dates, numbers
    (quantities when the name says so) and currency codes. For schemas without a vocabulary."""
    kinds: dict[str, ValueKind] = {}
    defs = schema.get("$defs")
    nodes: list[object] = [schema, *(defs.values() if isinstance(defs, Mapping) else ())]
    for node in nodes:
        properties = node.get("properties") if isinstance(node, Mapping) else None
        if not isinstance(properties, Mapping):
            continue
        for name, prop in properties.items():
            kind = _kind_of_property(str(name), prop)
            if kind is not None:
                kinds.setdefault(str(name), kind)
    return kinds


def _kind_of_property(name: str, prop: object) -> ValueKind | None:
    if not isinstance(prop, Mapping):
        return None
    options = [prop, *(o for o in prop.get("anyOf", ()) if isinstance(o, Mapping))]
    for option in options:
        if option.get("format") == "date":
            return "date"
        if option.get("format") == "time":
            return "time"
        if option.get("type") in ("number", "integer"):
            return "quantity" if re.search(r"qty|quantity", name) else "amount"
    if "currency" in name:
        return "currency"
    return None
