"""What grounding answers: per field path, where the value is printed, or that it is not."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Final, Literal, Protocol, TypeAlias

from pipeline.domain import Word


class Ungrounded(Enum):
    UNGROUNDED = "ungrounded"


UNGROUNDED: Final = Ungrounded.UNGROUNDED


@dataclass(frozen=True, slots=True)
class Location:
    """Where a value is printed: page index, union box of the matched words (PDF points from
    the page's top-left corner) and the words as printed."""

    page: int
    bbox: tuple[float, float, float, float]
    matched_text: str

    def to_json(self) -> dict[str, Any]:
        return {
            "page": self.page,
            "bbox": [round(v, 2) for v in self.bbox],
            "text": self.matched_text,
        }


Found: TypeAlias = Location | Literal[Ungrounded.UNGROUNDED]


@dataclass(slots=True)
class Grounding:
    """Per field path ("total", "line_items[2].amount"): a Location or UNGROUNDED."""

    fields: dict[str, Found] = field(default_factory=dict)

    def __getitem__(self, path: str) -> Found:
        return self.fields[path]

    def __contains__(self, path: object) -> bool:
        return path in self.fields

    def __iter__(self) -> Iterator[str]:
        return iter(self.fields)

    def __len__(self) -> int:
        return len(self.fields)

    def get(self, path: str) -> Found | None:
        return self.fields.get(path)

    def ungrounded(self) -> list[str]:
        return [path for path, found in self.fields.items() if found is UNGROUNDED]

    def located(self) -> dict[str, Location]:
        return {p: f for p, f in self.fields.items() if isinstance(f, Location)}

    def to_json(self) -> dict[str, Any]:
        return {
            path: found.to_json() if isinstance(found, Location) else found.value
            for path, found in self.fields.items()
        }


class HasWords(Protocol):
    """Anything with a page index and positioned words, e.g. PageContent."""

    @property
    def index(self) -> int: ...

    @property
    def words(self) -> Sequence[Word]: ...


@dataclass(frozen=True, slots=True)
class PageWords:
    index: int
    words: Sequence[Word]
