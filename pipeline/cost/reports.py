"""Cost reports: the numbers behind `pagemill costs` and the `cost_*` SQL views.

The views (migration 0008) and the command aggregate the same base view, `cost_calls`, with the
same expressions (`AGGREGATES`); the command can add a `--since` filter, which a view cannot.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import StrEnum
from typing import Any

from sqlalchemy import text
from sqlalchemy.orm import Session


class GroupBy(StrEnum):
    DAY = "day"
    MODEL = "model"
    SCHEMA = "schema"
    PREFIX = "prefix"
    DOCUMENT = "document"


# Calls whose estimate can be compared with an answer: the provider answered (usage known).
_ANSWERED = "outcome IN ('ok', 'invalid_output', 'truncated') AND purpose <> 'cache_hit'"

# (column, expression) in output order; keep in step with migration 0008's copy.
AGGREGATES: tuple[tuple[str, str], ...] = (
    ("calls", "count(*) FILTER (WHERE purpose <> 'cache_hit')"),
    ("documents", "count(DISTINCT document_id)"),
    ("pages", "coalesce(sum(pages) FILTER (WHERE purpose IN ('extract', 'cache_hit')), 0)"),
    ("cost_usd", "coalesce(sum(cost_usd), 0)"),
    ("unpriced_calls", "count(*) FILTER (WHERE cost_usd IS NULL)"),
    ("input_tokens", "coalesce(sum(total_input_tokens), 0)"),
    ("output_tokens", "coalesce(sum(output_tokens), 0)"),
    ("saved_page_cache_usd", "coalesce(sum(saved_page_cache_usd), 0)"),
    ("saved_cascade_usd", "coalesce(sum(saved_cascade_usd), 0)"),
    ("saved_batch_usd", "coalesce(sum(saved_batch_usd), 0)"),
    ("saved_prompt_cache_usd", "coalesce(sum(saved_prompt_cache_usd), 0)"),
    ("saved_usd", "coalesce(sum(saved_usd), 0)"),
    ("cache_hits", "count(*) FILTER (WHERE purpose = 'cache_hit')"),
    ("cascade_pages", "coalesce(sum(pages) FILTER (WHERE cascade_first), 0)"),
    ("escalated_pages", "coalesce(sum(pages) FILTER (WHERE purpose = 'escalate'), 0)"),
    ("batch_calls", "count(*) FILTER (WHERE service_tier = 'batch')"),
    ("prompt_cache_marked", "count(*) FILTER (WHERE prompt_cache_marked)"),
    (
        "prompt_cache_hits",
        "count(*) FILTER (WHERE prompt_cache_marked AND cache_read_input_tokens > 0)",
    ),
    (
        "estimated_input_tokens",
        f"coalesce(sum(estimated_input_tokens) FILTER (WHERE {_ANSWERED}), 0)",
    ),
    (
        "actual_input_tokens",
        f"coalesce(sum(total_input_tokens) FILTER (WHERE {_ANSWERED}"
        " AND estimated_input_tokens IS NOT NULL), 0)",
    ),
    (
        "estimated_cost_usd",
        f"coalesce(sum(estimated_cost_usd) FILTER (WHERE {_ANSWERED} AND cost_usd IS NOT NULL), 0)",
    ),
    (
        "actual_cost_usd",
        f"coalesce(sum(cost_usd) FILTER (WHERE {_ANSWERED} AND estimated_cost_usd IS NOT NULL), 0)",
    ),
)

DIMENSIONS: dict[GroupBy, tuple[str, ...]] = {
    GroupBy.DAY: ("day",),
    GroupBy.MODEL: ("provider", "model"),
    GroupBy.SCHEMA: ("schema_name",),
    GroupBy.PREFIX: ("prefix",),
    GroupBy.DOCUMENT: ("document_id", "bucket", "key"),
}


def aggregate_sql(group: GroupBy, where: str = "") -> str:
    dims = ", ".join(DIMENSIONS[group])
    columns = ",\n       ".join(f"{expr} AS {name}" for name, expr in AGGREGATES)
    return (
        f"SELECT {dims},\n       {columns}\n  FROM cost_calls\n{where}"
        f" GROUP BY {dims}\n ORDER BY {dims}"
    )


@dataclass(frozen=True, slots=True)
class CostRow:
    group: dict[str, Any]
    figures: dict[str, Any]

    def ratio(self, part: str, whole: str) -> Decimal | None:
        den = Decimal(self.figures[whole] or 0)
        return None if den == 0 else Decimal(self.figures[part] or 0) / den


def cost_report(session: Session, group: GroupBy, since: datetime | None = None) -> list[CostRow]:
    where = "WHERE created_at >= :since\n" if since is not None else ""
    rows = session.execute(text(aggregate_sql(group, where)), {"since": since}).mappings()
    dims = DIMENSIONS[group]
    return [
        CostRow(
            group={name: row[name] for name in dims},
            figures={name: row[name] for name, _ in AGGREGATES},
        )
        for row in rows
    ]


def money(value: Decimal | int | None, places: int = 6) -> str:
    """A plain decimal (never 1E-8), to `places` decimals."""
    if value is None:
        return "-"
    return format(Decimal(value).quantize(Decimal(1).scaleb(-places)), "f")
