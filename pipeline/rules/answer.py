"""A rules answer in its schema's JSON shape: dates and times in ISO form, amounts as plain
decimals, every field in the order the answer declares it."""

from __future__ import annotations

from dataclasses import fields
from datetime import date, time
from decimal import Decimal
from typing import Any

from pipeline.text.amounts import format_amount

# What an answer carries about its fields rather than as one of them.
_ABOUT_THE_ANSWER = frozenset({"confidence", "notes"})


def schema_json(answer: Any) -> dict[str, Any]:
    """The fields of a rules answer (a dataclass) as the schema's JSON."""
    return {
        f.name: _json_value(getattr(answer, f.name))
        for f in fields(answer)
        if f.name not in _ABOUT_THE_ANSWER
    }


def _json_value(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format_amount(value)
    if isinstance(value, (date, time)):
        return value.isoformat()
    return value
