"""Parsers for the cost settings: cascades, failover routes and batch routes.

Each raises ValueError naming the bad entry; the settings turn that into a start-up error.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.domain import ObjectRef

ANY = "*"


def _entries(spec: str) -> list[str]:
    return [e.strip() for e in spec.replace("\n", ";").split(";") if e.strip()]


def parse_cascade(spec: str) -> dict[str, tuple[str, ...]]:
    """`invoice=claude-haiku-4-5>claude-sonnet-4-6;*=...`: per schema (or `*` for any other),
    the models to try in order, cheapest first. Models are of the document's provider."""
    table: dict[str, tuple[str, ...]] = {}
    for entry in _entries(spec):
        schema, sep, chain = (part.strip() for part in entry.partition("="))
        models = tuple(m.strip() for m in chain.split(">"))
        if not sep or not schema or len(models) < 2 or not all(models):
            raise ValueError(f"cascade {entry!r}: expected schema=cheap-model>stronger-model[>...]")
        if len(set(models)) != len(models):
            raise ValueError(f"cascade {entry!r}: a model appears twice")
        if schema in table:
            raise ValueError(f"cascade {entry!r}: schema {schema} is given twice")
        table[schema] = models
    return table


def cascade_for(table: dict[str, tuple[str, ...]], schema: str) -> tuple[str, ...]:
    return table.get(schema) or table.get(ANY) or ()


@dataclass(frozen=True, slots=True)
class Target:
    provider: str
    model: str | None = None  # None: the provider's configured model

    @property
    def label(self) -> str:
        return f"{self.provider}:{self.model}" if self.model else self.provider


def _target(text: str, entry: str, *, wildcard: bool) -> Target:
    provider, _, model = (part.strip() for part in text.partition(":"))
    if not provider:
        raise ValueError(f"failover {entry!r}: {text!r} names no provider")
    if model == ANY and not wildcard:
        raise ValueError(f"failover {entry!r}: the secondary must name a model or none")
    return Target(provider, model or None)


def parse_failover(spec: str) -> dict[tuple[str, str], Target]:
    """`anthropic:claude-sonnet-4-6=openai_compat;anthropic:*=anthropic:claude-haiku-4-5`:
    where calls to a model go while its circuit is open. Only the first `:` splits a provider
    from a model (model ids may contain colons)."""
    table: dict[tuple[str, str], Target] = {}
    for entry in _entries(spec):
        primary, sep, secondary = (part.strip() for part in entry.rpartition("="))
        if not sep or not primary or not secondary:
            raise ValueError(f"failover {entry!r}: expected provider:model=provider[:model]")
        first = _target(primary, entry, wildcard=True)
        key = (first.provider, first.model or ANY)
        if key in table:
            raise ValueError(f"failover {entry!r}: {first.label} is given twice")
        table[key] = _target(secondary, entry, wildcard=False)
    return table


def failover_for(table: dict[tuple[str, str], Target], provider: str, model: str) -> Target | None:
    return table.get((provider, model)) or table.get((provider, ANY))


def parse_batch_routes(spec: str) -> list[tuple[str | None, str]]:
    """`archive/;s3://inbox/backfill/`: (bucket or None, key prefix) of non-urgent objects."""
    routes: list[tuple[str | None, str]] = []
    for entry in _entries(spec):
        prefix = entry.removesuffix(ANY)
        if ANY in prefix:
            raise ValueError(f"batch route {entry!r}: '*' is only allowed at the end")
        if prefix.startswith("s3://"):
            bucket, _, key_prefix = prefix.removeprefix("s3://").partition("/")
            if not bucket:
                raise ValueError(f"batch route {entry!r}: no bucket after s3://")
            routes.append((bucket, key_prefix))
        else:
            routes.append((None, prefix))
    return routes


def is_batch_route(routes: list[tuple[str | None, str]], ref: ObjectRef) -> bool:
    return any(
        (bucket is None or bucket == ref.bucket) and ref.key.startswith(prefix)
        for bucket, prefix in routes
    )


# Object metadata (x-amz-meta-pagemill-priority) that marks an upload as not urgent.
PRIORITY_METADATA_KEY = "pagemill-priority"
_BATCH_WORDS = frozenset({"batch", "low", "non-urgent", "nonurgent", "bulk"})


def metadata_priority(metadata: dict[str, str] | None) -> str | None:
    """ "batch" when the object's metadata says it is not urgent, "urgent" when it says anything
    else (then no batch route applies either), None when it says nothing."""
    for key, value in (metadata or {}).items():
        if key.strip().lower().removeprefix("x-amz-meta-") == PRIORITY_METADATA_KEY:
            return "batch" if value.strip().lower() in _BATCH_WORDS else "urgent"
    return None
