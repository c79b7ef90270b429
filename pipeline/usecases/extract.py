"""Extract one document's pages with a provider: metered calls, validation, bounded re-asks."""

from __future__ import annotations

import dataclasses
import hashlib
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from typing import TYPE_CHECKING, Any, Protocol

from pipeline import logs, metrics
from pipeline.checks import RuleFailure
from pipeline.costing import PriceTable
from pipeline.domain import (
    CallOutcome,
    CallPurpose,
    CallRecord,
    ExtractionRequest,
    ExtractionResult,
    PageContent,
    PageRenderer,
    ProviderReply,
    Savings,
    Usage,
)
from pipeline.errors import ErrorCategory, PermanentError, PipelineError
from pipeline.extractors.base import Extractor
from pipeline.pages import encode_jpeg
from pipeline.ratelimit import NoRateLimiter, RateLimiter, estimate_input_tokens, limited
from pipeline.schemas import SchemaSpec
from pipeline.validation import feedback_for, validate

if TYPE_CHECKING:
    from pipeline.cost.hooks import CostHooks


@dataclass(slots=True)
class Meter:
    """Every call made for one unit of work, kept even when the work fails. `on_start` stores
    a call's row before the request is sent (it raises if it cannot: then no call is made)."""

    calls: list[CallRecord] = field(default_factory=list)
    on_start: Callable[[CallRecord], None] | None = None

    @property
    def cost_usd(self) -> Decimal:
        return sum((c.cost_usd or Decimal(0) for c in self.calls), Decimal(0))


@dataclass(frozen=True, slots=True)
class ExtractOptions:
    pages_per_call: int = 20
    max_reasks: int = 1
    max_tokens: int | None = None  # None: the extractor's own default
    # What an output budget reservation assumes when neither the request nor the extractor
    # sets max_tokens (a server's own limit); providers count the whole max_tokens against the
    # output rate limit.
    expected_max_tokens: int = 4096
    # A reply cut off at its token limit is asked once more with twice the budget, up to this.
    max_tokens_ceiling: int = 64_000
    limiter: RateLimiter = field(default_factory=NoRateLimiter)
    max_rechecks: int = 1  # re-asks about fields that fail a business rule
    recheck_dpi: int = 268  # twice the resolution of a 1568 px A4 page
    tile_long_edge: int = 1568
    # Estimates, budgets, page cache, prompt caching, batch and failover for one document
    # (pipeline.cost); None: calls are made as asked (the in-process `pagemill extract`).
    cost: CostHooks | None = None


def _metered_call(
    extractor: Extractor,
    request: ExtractionRequest,
    prices: PriceTable,
    meter: Meter,
    page_indexes: list[int],
    options: ExtractOptions,
    purpose: CallPurpose = CallPurpose.EXTRACT,
) -> ProviderReply:
    plan = None
    if options.cost is not None:
        # May hold the call back (a cap, an open circuit, a batch answer still to come) or
        # stop the document (its own budget); may answer it (a batch result) or reroute it.
        plan = options.cost.plan(extractor, request, purpose, page_indexes, meter)
        if plan.answered is not None:
            reply, answered = plan.answered
            meter.calls.append(answered)
            return reply
        extractor, request = plan.extractor, plan.request
        purpose = plan.purpose or purpose
    estimate = plan.estimate if plan is not None else None
    attempt = len(meter.calls) + 1
    call_id = uuid.uuid4()  # the same row from `started` to the outcome
    prompt_chars = len(request.schema.instructions) + len(request.feedback or "")
    header = CallRecord(
        provider=extractor.provider,
        model=extractor.model,
        attempt=attempt,
        outcome=CallOutcome.STARTED,
        latency_ms=0,
        usage=Usage(),
        cost_usd=None,  # unknown until the answer comes
        page_indexes=page_indexes,
        call_id=call_id,
        purpose=purpose,
        estimated_input_tokens=estimate.input_tokens if estimate else None,
        estimated_cost_usd=estimate.cost_usd if estimate else None,
        prompt_cache_marked=request.cache_prefix,
    )
    with limited(
        options.limiter,
        extractor.provider,
        extractor.model,
        estimate.input_tokens if estimate else estimate_input_tokens(request.pages, prompt_chars),
        request.max_tokens or extractor.max_tokens or options.expected_max_tokens,
    ) as permit:
        if meter.on_start is not None:
            meter.on_start(header)
        # Priced with the prices in force when the call ran; timed after the permit: latency
        # is the provider's, not our own throttling.
        ran_at = datetime.now(UTC)
        started = time.perf_counter()
        try:
            with metrics.call_in_flight(extractor.provider):
                reply = extractor.call(request)
        except PipelineError as exc:
            logs.bind(provider_request_id=exc.request_id)
            meter.calls.append(_failed(header, exc, started))
            if plan is not None and options.cost is not None:
                options.cost.settle(plan, meter.calls[-1], None)
            raise
        logs.bind(provider_request_id=reply.request_id)
        permit.actual = reply.usage
    record = _answered(header, reply, prices, ran_at, started)
    meter.calls.append(record)
    if plan is not None and options.cost is not None:
        options.cost.settle(plan, record, reply)
    return reply


def _failed(header: CallRecord, exc: PipelineError, started: float) -> CallRecord:
    return dataclasses.replace(
        header,
        outcome=CallOutcome.ERROR,
        latency_ms=_ms_since(started),
        # An error the provider answered with is not billed; a request sent and then lost
        # (timeout, dropped connection) may be: unknown (NULL, unpriced), not 0.
        cost_usd=None if exc.maybe_billed else Decimal(0),
        request_id=exc.request_id,
        error_category=exc.category.value,
        error_message=exc.message,
        savings=Savings(),
        budget_ledger_ids=list(header.budget_ledger_ids),
    )


def _answered(
    header: CallRecord, reply: ProviderReply, prices: PriceTable, ran_at: datetime, started: float
) -> CallRecord:
    cost = prices.cost(header.provider, header.model, reply.usage, ran_at)
    record = dataclasses.replace(
        header,
        outcome=CallOutcome.TRUNCATED if reply.truncated else CallOutcome.OK,
        latency_ms=_ms_since(started),
        usage=reply.usage,
        cost_usd=cost,
        request_id=reply.request_id,
        stop_reason=reply.stop_reason,
        savings=Savings(),
        budget_ledger_ids=list(header.budget_ledger_ids),
    )
    if cost is None:
        record.error_message = f"no price for model {header.model!r}: cost unknown"
    return record


def _ms_since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


@dataclass(slots=True)
class _Record:
    """One chunk's validated record, with what the extractor said of its own answer."""

    data: dict[str, Any]
    confidence: dict[str, float]
    notes: list[str]


def _extract_chunk(
    extractor: Extractor,
    schema: SchemaSpec,
    pages: list[PageContent],
    renderer: PageRenderer,
    prices: PriceTable,
    meter: Meter,
    options: ExtractOptions,
    purpose: CallPurpose = CallPurpose.EXTRACT,
) -> _Record:
    """One validated record for these pages, re-asking with the errors when output is invalid."""
    indexes = [p.index for p in pages]
    if options.cost is not None:
        cached = options.cost.cached_chunk(extractor, schema, pages, meter)
        if cached is not None:
            return _Record(cached, {}, [])  # a model's checked answer: no rule confidences
    first_call = len(meter.calls)
    request = ExtractionRequest(
        schema=schema, pages=pages, renderer=renderer, max_tokens=options.max_tokens
    )
    reasks = 0
    grown = False
    while True:
        reply = _metered_call(extractor, request, prices, meter, indexes, options, purpose)
        if reply.truncated:
            meter.calls[-1].error_category = ErrorCategory.TRUNCATED_OUTPUT.value
            meter.calls[-1].error_message = "output hit the token limit; not used"
            # A cut-off table is never a result: ask once more with room to finish, twice the
            # budget this call had (the request's, else the extractor's, else what the server
            # let it write before cutting it off).
            current = (
                request.max_tokens
                or extractor.max_tokens
                or reply.usage.output_tokens
                or options.expected_max_tokens
            )
            if grown or current >= options.max_tokens_ceiling:
                raise PermanentError(
                    ErrorCategory.TRUNCATED_OUTPUT,
                    f"output was cut off at {current} tokens on pages "
                    f"{_human(indexes)}; split the document or raise the limit",
                )
            request.max_tokens = min(current * 2, options.max_tokens_ceiling)
            grown = True
            purpose = CallPurpose.RETRY_TRUNCATED
            continue
        checked = validate(schema, reply.data)
        if checked.ok:
            data = checked.data()
            if options.cost is not None:
                options.cost.chunk_done(extractor, schema, pages, data, meter, first_call)
            return _Record(data, dict(reply.confidence), list(reply.notes))
        problems = ([reply.problem] if reply.problem else []) + checked.errors
        last = meter.calls[-1]
        last.outcome = CallOutcome.INVALID_OUTPUT
        last.error_category = ErrorCategory.INVALID_OUTPUT.value
        last.error_message = "; ".join(problems)[:2000]
        if not extractor.can_reask or reasks >= options.max_reasks:
            raise PermanentError(
                ErrorCategory.INVALID_OUTPUT,
                f"output failed validation after {reasks + 1} attempt(s): "
                + "; ".join(problems[:5]),
            )
        reasks += 1
        request.feedback = feedback_for(problems)
        purpose = CallPurpose.REASK


def merge_chunks(schema: SchemaSpec, records: list[dict[str, Any]]) -> dict[str, Any]:
    """One record from the records of a document's chunks, in page order, as the schema says:
    every list is concatenated (line items, and any list of a user's schema), every other field
    comes from the first chunk that has a value, except the schema's `merge_last` fields
    (totals), which come from the last chunk that has one."""
    if len(records) == 1:
        return records[0]
    merged: dict[str, Any] = {}
    for record in records:
        for name, value in record.items():
            if isinstance(value, list):
                target = merged.get(name)
                if not isinstance(target, list):
                    target = merged[name] = []
                target.extend(value)
            elif value is None:
                merged.setdefault(name, None)
            elif name in schema.merge_last or merged.get(name) is None:
                merged[name] = value
    return merged


class ChunkStore(Protocol):
    """Validated chunk answers kept outside the process (checkpoints), by page range
    [first, stop), so that a retry resumes after the last finished chunk."""

    def load(self, first: int, stop: int) -> dict[str, Any] | None: ...

    def save(self, first: int, stop: int, record: dict[str, Any]) -> None: ...


def extract_pages(
    extractor: Extractor,
    schema: SchemaSpec,
    chunks: Iterable[list[PageContent]],
    renderer: PageRenderer,
    prices: PriceTable,
    meter: Meter,
    options: ExtractOptions,
    checkpoints: ChunkStore | None = None,
) -> ExtractionResult:
    """Split → extract → validate for a whole document, one chunk of pages per call so memory
    stays flat. Raises PipelineError on failure; the calls made so far stay in `meter`. With
    `checkpoints`, a chunk answered before (by an earlier attempt) is not asked again, and each
    new answer is saved as soon as it is validated."""
    records: list[_Record] = []
    for chunk in chunks:
        # An empty chunk is a document without pages (an XML e-invoice): its extractor reads
        # the document's data; there is nothing to checkpoint.
        first, stop = (chunk[0].index, chunk[-1].index + 1) if chunk else (0, 0)
        store = checkpoints if chunk else None
        saved = store.load(first, stop) if store is not None else None
        if saved is not None:
            # A model's answer from an earlier attempt; only the offline rules rate their own
            # values or leave notes, and they are never checkpointed.
            record = _Record(saved, {}, [])
        else:
            record = _extract_chunk(extractor, schema, chunk, renderer, prices, meter, options)
            if store is not None:
                store.save(first, stop, record.data)
        records.append(record)
    if not records:
        raise PermanentError(ErrorCategory.BAD_INPUT, "the document has no pages")
    merged = merge_chunks(schema, [r.data for r in records])
    confidence: dict[str, float] = {}
    for record in records:  # as merge_chunks takes values: `merge_last` from the last chunk
        for name, value in record.confidence.items():
            if name not in confidence or name in schema.merge_last:
                confidence[name] = value
    checked = validate(schema, merged)
    if not checked.ok:
        raise PermanentError(
            ErrorCategory.INVALID_OUTPUT,
            "merged result failed validation: " + "; ".join(checked.errors[:5]),
        )
    return ExtractionResult(
        schema_name=schema.name,
        schema_version=schema.version,
        provider=extractor.provider,
        model=extractor.model,
        data=checked.data(),
        valid=True,
        errors=[],
        calls=list(meter.calls),
        confidence=confidence,
        notes=[note for record in records for note in record.notes],
    )


def chunked(pages: Sequence[PageContent], size: int) -> list[list[PageContent]]:
    """Pages `size` at a time. A document without pages (an XML e-invoice) is one empty
    chunk: its extractor reads the document's data, not pages."""
    return [list(pages[i : i + size]) for i in range(0, len(pages), max(size, 1))] or [[]]


def _human(indexes: list[int]) -> str:
    if not indexes:
        return "-"
    first, last = indexes[0] + 1, indexes[-1] + 1
    return str(first) if first == last else f"{first}-{last}"


def high_res_tiles(
    renderer: PageRenderer, index: int, dpi: int, long_edge: int
) -> list[PageContent]:
    """The page at `dpi`, cut into tiles no larger than `long_edge` so that the API does not
    scale them back down: small print gets the pixels it needs."""
    image = renderer.render(index, dpi)
    cols = max(1, -(-image.width // long_edge))
    rows = max(1, -(-image.height // long_edge))
    tile_w, tile_h = -(-image.width // cols), -(-image.height // rows)
    tiles = []
    for row in range(rows):
        for col in range(cols):
            box = (
                col * tile_w,
                row * tile_h,
                min((col + 1) * tile_w, image.width),
                min((row + 1) * tile_h, image.height),
            )
            part = image.crop(box)
            data = encode_jpeg(part)
            tiles.append(
                PageContent(
                    index=index,
                    width_pt=image.width * 72.0 / dpi,
                    height_pt=image.height * 72.0 / dpi,
                    image=data,
                    media_type="image/jpeg",
                    pixel_width=part.width,
                    pixel_height=part.height,
                    render_dpi=float(dpi),
                    image_sha256=hashlib.sha256(data).hexdigest(),
                )
            )
    return tiles


_AMOUNT_FIELDS = {"subtotal", "tax", "total", "line_items"}


def _pages_to_reread(fields: list[str], grounding: dict[str, Any], page_count: int) -> list[int]:
    found: set[int] = set()
    for path, where in grounding.items():
        top = path.split("[", 1)[0].split(".", 1)[0]
        if top in fields and isinstance(where, dict) and "page" in where:
            found.add(int(where["page"]))
    if found:
        return sorted(found)[:2]
    # Nothing to go by: totals and tables usually end on the last page, headers start on the first.
    if any(f in _AMOUNT_FIELDS for f in fields):
        return [page_count - 1]
    return [0]


def recheck(
    extractor: Extractor,
    schema: SchemaSpec,
    data: dict[str, Any],
    failures: Sequence[RuleFailure],
    grounding: dict[str, Any],
    page_count: int,
    renderer: PageRenderer,
    prices: PriceTable,
    meter: Meter,
    options: ExtractOptions,
) -> dict[str, Any]:
    """Ask again about the fields that failed a business rule, showing the relevant page at a
    higher resolution; only those fields are taken from the answer."""
    fields = sorted({f.split("[", 1)[0] for failure in failures for f in failure.fields})
    pages = _pages_to_reread(fields, grounding, page_count)
    try:
        tiles = [
            tile
            for index in pages
            for tile in high_res_tiles(renderer, index, options.recheck_dpi, options.tile_long_edge)
        ]
    except PermanentError as exc:
        if exc.category is not ErrorCategory.TOO_LARGE:
            raise
        return data  # a page too large to re-read closer: the first answer stands, for review
    problems = "\n".join(f"- {failure.message}" for failure in failures)
    request = ExtractionRequest(
        schema=schema,
        pages=tiles,
        renderer=renderer,
        feedback=(
            "The record extracted earlier fails these checks:\n"
            f"{problems}\nThe images are high-resolution tiles of page(s) "
            f"{', '.join(str(p + 1) for p in pages)}. Re-read these fields character by "
            f"character: {', '.join(fields)}. Return the full record; if the document itself "
            "is inconsistent, report the values exactly as printed."
        ),
        max_tokens=options.max_tokens,
    )
    reply = _metered_call(extractor, request, prices, meter, pages, options, CallPurpose.RECHECK)
    checked = validate(schema, reply.data)
    if reply.truncated or not checked.ok:
        last = meter.calls[-1]
        last.outcome = CallOutcome.TRUNCATED if reply.truncated else CallOutcome.INVALID_OUTPUT
        last.error_message = "; ".join(checked.errors[:5]) or reply.problem
        return data
    answer = checked.data()
    merged = validate(
        schema, {**data, **{name: answer.get(name) for name in fields if name in answer}}
    )
    return merged.data() if merged.ok else data
