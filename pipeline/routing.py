"""Schema routing: which schema an object gets, from its metadata, its key prefix, or a default."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pipeline.domain import ObjectRef
from pipeline.errors import ErrorCategory, PermanentError
from pipeline.schemas import SCHEMA_NAME_RE, schema_names

__all__ = [
    "METADATA_KEY",
    "Route",
    "check_routes",
    "configure_schemas",
    "match_route",
    "metadata_schema",
    "parse_routes",
    "schema_for",
]

# Set on upload as x-amz-meta-pagemill-schema; boto3 hands it over as Metadata["pagemill-schema"].
METADATA_KEY = "pagemill-schema"
_AMZ_META = "x-amz-meta-"
_DEFAULT = "*"
_S3 = "s3://"


@dataclass(frozen=True, slots=True)
class Route:
    """Objects whose key starts with `prefix` (in `bucket`, when given) get `schema`."""

    schema: str
    prefix: str = ""  # "" matches every key: the `*` default
    bucket: str | None = None  # None: any bucket

    @property
    def label(self) -> str:
        if self.bucket is not None:
            return f"{_S3}{self.bucket}/{self.prefix}"
        return self.prefix or _DEFAULT

    def matches(self, ref: ObjectRef) -> bool:
        return (self.bucket is None or self.bucket == ref.bucket) and ref.key.startswith(
            self.prefix
        )


def parse_routes(spec: str) -> list[Route]:
    """Parse `receipts/=receipt;s3://inbox/invoices/=invoice;*=invoice`.

    Each entry is `prefix=schema`; a prefix may name its bucket as `s3://bucket/prefix` and may
    end in `*` (ignored); `*` alone stands for every other object. Raises ValueError naming the
    bad entry (the settings turn that into a start-up error). Schema names are checked later, by
    `check_routes`, because user schemas are registered after the settings are read.
    """
    routes: list[Route] = []
    seen: dict[tuple[str | None, str], str] = {}
    for raw_entry in spec.replace("\n", ";").split(";"):
        entry = raw_entry.strip()
        if not entry:
            continue
        # The last '=' splits: keys may contain '=', schema names never do.
        target, sep, name = (part.strip() for part in entry.rpartition("="))
        if not sep or not target:
            raise ValueError(f"schema route {entry!r}: expected prefix=schema or *=schema")
        if not SCHEMA_NAME_RE.fullmatch(name):
            raise ValueError(f"schema route {entry!r}: {name!r} is not a schema name")
        route = _route(target, name, entry)
        where = (route.bucket, route.prefix)
        if where in seen:
            raise ValueError(
                f"schema route {entry!r}: {route.label} already routes to {seen[where]}"
            )
        seen[where] = name
        routes.append(route)
    return routes


def _route(target: str, name: str, entry: str) -> Route:
    bucket: str | None = None
    prefix = target
    if target.startswith(_S3):
        bucket, _, prefix = target.removeprefix(_S3).partition("/")
        if not bucket:
            raise ValueError(f"schema route {entry!r}: no bucket after {_S3}")
    # People write `receipts/*` and `s3://inbox/*`; both mean "every key under this prefix".
    prefix = prefix.removesuffix(_DEFAULT)
    if _DEFAULT in prefix:
        raise ValueError(f"schema route {entry!r}: '*' is only allowed at the end of a prefix")
    return Route(name, prefix=prefix, bucket=bucket)


def match_route(ref: ObjectRef, routes: Iterable[Route]) -> Route | None:
    """The route for `ref`: a bucket-specific route before any other, then the longest prefix."""
    found = [route for route in routes if route.matches(ref)]
    if not found:
        return None
    return max(found, key=lambda route: (route.bucket is not None, len(route.prefix)))


def metadata_schema(metadata: Mapping[str, str] | None) -> str | None:
    """The schema named by the object's `pagemill-schema` metadata, if any.

    Keys are compared without case and without an `x-amz-meta-` prefix: S3-compatible servers
    differ in how they spell user metadata back.
    """
    if not metadata:
        return None
    for key, value in metadata.items():
        if key.strip().lower().removeprefix(_AMZ_META) == METADATA_KEY:
            name = str(value).strip()
            return name or None
    return None


def schema_for(
    ref: ObjectRef,
    routes: Sequence[Route],
    metadata: Mapping[str, str] | None,
    default: str,
) -> str:
    """The schema name for `ref`: object metadata, else the best route, else `default`.

    Raises PermanentError(CONFIGURATION) when the chosen name is not a registered schema.
    """
    known = schema_names()
    requested = metadata_schema(metadata)
    if requested is not None:
        # Uploaders type metadata by hand; registered names are lower-case.
        name = requested if requested in known else requested.lower()
        origin = f"object metadata {METADATA_KEY}={requested!r}"
    elif (route := match_route(ref, routes)) is not None:
        name, origin = route.schema, f"schema route {route.label}={route.schema}"
    else:
        name, origin = default, "the default schema"
    if name not in known:
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            f"s3://{ref.bucket}/{ref.key}: unknown schema {name!r} from {origin} "
            f"(known: {', '.join(known)})",
        )
    return name


def check_routes(routes: Iterable[Route], default: str) -> None:
    """Fail at start-up, not per document, when a route or the default names no schema."""
    known = set(schema_names())
    unknown = [f"{route.label}={route.schema}" for route in routes if route.schema not in known]
    if default not in known:
        unknown.append(f"default={default}")
    if unknown:
        raise PermanentError(
            ErrorCategory.CONFIGURATION,
            f"unknown schema in {', '.join(unknown)} (known: {', '.join(sorted(known))})",
        )


def configure_schemas(user_schemas: Iterable[str], routes: str, default: str) -> list[Route]:
    """Register user schemas, then parse and check the routes: one call at process start."""
    from pipeline.schemas.user import register_user_schemas

    register_user_schemas(user_schemas)
    try:
        parsed = parse_routes(routes)
    except ValueError as exc:
        raise PermanentError(ErrorCategory.CONFIGURATION, str(exc)) from None
    check_routes(parsed, default)
    return parsed
