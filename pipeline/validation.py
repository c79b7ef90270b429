"""Validation: provider output becomes a schema instance, or a list of readable errors."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ValidationError

from pipeline.schemas import SchemaSpec


@dataclass(frozen=True, slots=True)
class Validated:
    instance: BaseModel | None
    errors: list[str]

    @property
    def ok(self) -> bool:
        return self.instance is not None

    def data(self) -> dict[str, Any]:
        """JSON-ready dict (dates as ISO strings, decimals as strings)."""
        if self.instance is None:
            raise ValueError("no valid instance")
        return self.instance.model_dump(mode="json")


def validate(schema: SchemaSpec, data: dict[str, Any] | None) -> Validated:
    if data is None:
        return Validated(None, ["the provider returned no structured output"])
    try:
        return Validated(schema.model.model_validate(data), [])
    except ValidationError as exc:
        return Validated(None, [_format(err) for err in exc.errors()])


def _format(err: Any) -> str:
    where = ".".join(str(part) for part in err["loc"]) or "(root)"
    got = err.get("input")
    shown = repr(got) if not isinstance(got, dict | list) else type(got).__name__
    if len(shown) > 60:
        shown = shown[:57] + "..."
    return f"{where}: {err['msg']} (got {shown})"


def feedback_for(errors: list[str]) -> str:
    """The re-ask message: what was wrong, so the model can correct exactly that."""
    lines = "\n".join(f"- {e}" for e in errors)
    return (
        "Your previous answer did not validate against the schema:\n"
        f"{lines}\nReturn the full record again with these fields corrected. Use null for a "
        "value that is not on the page."
    )
