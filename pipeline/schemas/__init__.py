"""Schema registry: a schema is a Pydantic model plus a name, a version and instructions."""

from __future__ import annotations

import copy
import functools
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel

from pipeline.checks import Rule
from pipeline.errors import ErrorCategory, PermanentError

BUILTIN = "builtin"

# Names travel in object metadata, route settings, tool names and database rows: keep them plain.
SCHEMA_NAME_RE = re.compile(r"[a-z0-9][a-z0-9_-]{0,63}")


@dataclass(frozen=True, slots=True)
class SchemaSpec:
    name: str
    version: str
    model: type[BaseModel]
    instructions: str
    rules: Sequence[Rule] = field(default_factory=tuple)  # business rules beyond the types
    source: str = BUILTIN  # where a user schema came from (its ref), so clashes can be named
    # A document longer than one model call is extracted in chunks of pages and merged: every
    # list field is concatenated in page order, every other field is taken from the first chunk
    # that has a value, except these top-level fields, taken from the last chunk that has one
    # (totals are printed at the end).
    merge_last: frozenset[str] = frozenset()

    def json_schema(self) -> dict[str, Any]:
        # Pydantic rebuilds it on every call (~2 ms, once per model call); a copy is 0.1 ms and
        # keeps the cached one safe from a caller that edits what it gets.
        return copy.deepcopy(_json_schema_of(self.model))


@functools.cache
def _json_schema_of(model: type[BaseModel]) -> dict[str, Any]:
    return model.model_json_schema()


_SCHEMAS: dict[str, SchemaSpec] = {}


def register_schema(spec: SchemaSpec) -> SchemaSpec:
    _SCHEMAS[spec.name] = spec
    return spec


def get_schema(name: str) -> SchemaSpec:
    _load_builtins()
    try:
        return _SCHEMAS[name]
    except KeyError:
        known = ", ".join(sorted(_SCHEMAS))
        raise PermanentError(
            ErrorCategory.CONFIGURATION, f"unknown schema {name!r} (known: {known})"
        ) from None


def schema_names() -> list[str]:
    _load_builtins()
    return sorted(_SCHEMAS)


def _load_builtins() -> None:
    # Importing a module registers it; kept lazy so that importing the registry stays cheap.
    from pipeline.schemas import invoice, receipt  # noqa: F401
