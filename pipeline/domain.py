"""Domain types passed between stages: pages, extraction requests, provider replies, usage."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from decimal import Decimal
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from PIL import Image

    from pipeline.schemas import SchemaSpec


class DocumentStatus(StrEnum):
    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    NEEDS_REVIEW = "needs_review"
    FAILED = "failed"

    @property
    def is_final(self) -> bool:
        return self in {DocumentStatus.DONE, DocumentStatus.NEEDS_REVIEW, DocumentStatus.FAILED}


class Stage(StrEnum):
    PREPARE = "prepare"
    EXTRACT = "extract"


class PageStatus(StrEnum):
    PENDING = "pending"
    RENDERED = "rendered"
    EXTRACTED = "extracted"
    FAILED = "failed"


class CallPurpose(StrEnum):
    """Why a call was made: the first read of a chunk, or one of the ways it is asked again."""

    EXTRACT = "extract"
    REASK = "reask"  # the previous answer failed validation
    RETRY_TRUNCATED = "retry_truncated"  # the previous answer hit max_tokens
    RECHECK = "recheck"  # fields that broke a rule, re-read at a higher resolution
    ESCALATE = "escalate"  # the cascade's stronger model, for pages the cheaper one got wrong
    CACHE_HIT = "cache_hit"  # no request: the page cache had the answer (cost 0)


class CallOutcome(StrEnum):
    # Written just before the request is sent, so that a worker killed mid-call still leaves its
    # row (the provider may bill the call: tokens and cost unknown); the answer overwrites it.
    STARTED = "started"
    OK = "ok"
    INVALID_OUTPUT = "invalid_output"
    TRUNCATED = "truncated"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class ObjectRef:
    """One version of one object in a bucket, as named by a bucket event or a listing."""

    bucket: str
    key: str
    version: str = ""  # version id when the bucket is versioned, else the ETag, else ""
    size: int | None = None
    event_name: str = ""
    event_time: str | None = None


@dataclass(frozen=True, slots=True)
class Word:
    """A positioned word; coordinates in PDF points from the page's top-left corner."""

    text: str
    x0: float
    y0: float
    x1: float
    y1: float
    block: int = 0
    line: int = 0


@dataclass(slots=True)
class PageContent:
    """What an extractor gets for one page: an image sized for the model, plus text if any."""

    index: int
    width_pt: float
    height_pt: float
    image: bytes
    media_type: str
    pixel_width: int
    pixel_height: int
    render_dpi: float
    image_sha256: str
    text: str = ""
    words: list[Word] = field(default_factory=list)
    image_passthrough: bool = False

    @property
    def has_text_layer(self) -> bool:
        return bool(self.text.strip())


class PageRenderer(Protocol):
    """Re-renders a page at another resolution (OCR, or re-reading tiny text)."""

    def render(self, index: int, dpi: int) -> Image.Image: ...


@dataclass(slots=True)
class ExtractionRequest:
    schema: SchemaSpec
    pages: list[PageContent]
    renderer: PageRenderer
    feedback: str | None = None  # validation errors of the previous attempt, for a re-ask
    max_tokens: int | None = None
    # Mark the request's fixed prefix (instructions, schema) for the provider's prompt cache;
    # decided per call by the cost policy (it only pays when more calls follow soon).
    cache_prefix: bool = False


@dataclass(slots=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    cache_creation_input_tokens: int = 0
    cache_read_input_tokens: int = 0
    service_tier: str | None = None

    @property
    def total_input_tokens(self) -> int:
        return self.input_tokens + self.cache_creation_input_tokens + self.cache_read_input_tokens


@dataclass(slots=True)
class ProviderReply:
    """One completed provider call. `data` is None when the reply carried no usable output."""

    data: dict[str, Any] | None
    usage: Usage
    request_id: str | None = None
    stop_reason: str | None = None
    truncated: bool = False
    problem: str | None = None  # why `data` is missing or unusable, in one line
    # How sure the extractor itself is of each field it filled, 0..1, when it can say (the
    # offline rules can; model APIs do not): weak values send the document to review.
    confidence: dict[str, float] = field(default_factory=dict)
    # Doubts the extractor reports about the record as a whole ("the rules failed on page 2").
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Savings:
    """Money a call did not cost thanks to each saving, priced when it ran (USD)."""

    page_cache: Decimal = Decimal(0)  # a cache hit: what producing the stored answer cost
    cascade: Decimal = Decimal(0)  # the cheap model vs the strong one (negative if escalated)
    batch: Decimal = Decimal(0)  # the batch discount
    prompt_cache: Decimal = Decimal(0)  # cache reads minus the cache-write premium

    @property
    def total(self) -> Decimal:
        return self.page_cache + self.cascade + self.batch + self.prompt_cache


@dataclass(slots=True)
class CallRecord:
    """One row of vlm_calls: a provider call attempt, successful or not."""

    provider: str
    model: str
    attempt: int
    outcome: CallOutcome
    latency_ms: int
    usage: Usage
    cost_usd: Decimal | None  # None: no price known for the model (shown as unpriced)
    request_id: str | None = None
    stop_reason: str | None = None
    error_category: str | None = None
    error_message: str | None = None
    page_indexes: list[int] = field(default_factory=list)
    # Made before the row is written, so that writing the same call twice is a no-op.
    call_id: uuid.UUID = field(default_factory=uuid.uuid4)
    purpose: CallPurpose = CallPurpose.EXTRACT
    # Estimated before the call was made (None: no estimate, e.g. the offline extractor).
    estimated_input_tokens: int | None = None
    estimated_cost_usd: Decimal | None = None
    cached_from_call_id: uuid.UUID | None = None  # a cache hit: the call that paid for it
    prompt_cache_marked: bool = False
    savings: Savings = field(default_factory=Savings)
    # Spending-cap ledger rows charged with the estimate when the call started; the outcome
    # corrects them by the actual cost (a database trigger).
    budget_ledger_ids: list[int] = field(default_factory=list)


@dataclass(slots=True)
class ExtractionResult:
    """Outcome of extracting one document: validated data or errors, with every call made."""

    schema_name: str
    schema_version: str
    provider: str
    model: str
    data: dict[str, Any] | None
    valid: bool
    errors: list[str]
    calls: list[CallRecord]
    grounding: dict[str, Any] | None = None
    review_reasons: list[str] = field(default_factory=list)
    confidence: dict[str, float] = field(default_factory=dict)  # see ProviderReply
    notes: list[str] = field(default_factory=list)

    @property
    def needs_review(self) -> bool:
        return bool(self.review_reasons)

    @property
    def cost_usd(self) -> Decimal:
        return sum((c.cost_usd or Decimal(0) for c in self.calls), Decimal(0))
