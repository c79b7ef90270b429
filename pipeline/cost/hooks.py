"""What the extract path asks of cost control before and after each model call, and the ways a
call can be held back: the document waits (caps, provider down, batch) or stops (its budget)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from pipeline.domain import CallPurpose, CallRecord, ExtractionRequest, PageContent, ProviderReply

if TYPE_CHECKING:
    from pipeline.cost.estimate import Estimate
    from pipeline.extractors.base import Extractor
    from pipeline.schemas import SchemaSpec
    from pipeline.usecases.extract import Meter


class Waiting(Exception):
    """The call must not be made now. Nothing failed: the document waits in a visible state
    (`reason`) and resumes by itself, at `until` at the latest (None: when woken)."""

    reason = "waiting"

    def __init__(self, message: str, until: datetime | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.until = until


class BudgetExceeded(Waiting):
    """A spending cap (day, month, tenant prefix) would be exceeded by this call."""

    reason = "budget_exceeded"


class ProviderHeld(Waiting):
    """The provider's circuit is open and no secondary is configured (or it is open too)."""

    reason = "provider_down"


class AwaitingBatch(Waiting):
    """The call went to the provider's batch API; the document resumes when it is answered."""

    reason = "batch"


class DocumentBudgetSpent(Exception):
    """The document's own token or money budget would be exceeded: no more calls for it; it
    goes to review with this reason instead of asking again."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(slots=True)
class CallPlan:
    """How a call is made: by whom (failover may pick a secondary), with what request (prompt
    caching marked or not), expected to cost what; or already answered (a batch result)."""

    extractor: Extractor
    request: ExtractionRequest
    estimate: Estimate | None = None
    answered: tuple[ProviderReply, CallRecord] | None = None
    purpose: CallPurpose | None = None  # what the call is recorded as, when not as asked


class CostHooks(Protocol):
    """Cost control for one document, called by `pipeline.usecases.extract`."""

    def cached_chunk(
        self, extractor: Extractor, schema: SchemaSpec, pages: list[PageContent], meter: Meter
    ) -> dict[str, Any] | None:
        """A stored answer for exactly these pages (a cache-hit row is added to `meter`)."""
        ...

    def chunk_done(
        self,
        extractor: Extractor,
        schema: SchemaSpec,
        pages: list[PageContent],
        data: dict[str, Any],
        meter: Meter,
        first_call: int,
    ) -> None:
        """A chunk's validated answer; `meter.calls[first_call:]` are the calls it took."""
        ...

    def plan(
        self,
        extractor: Extractor,
        request: ExtractionRequest,
        purpose: CallPurpose,
        page_indexes: list[int],
        meter: Meter,
    ) -> CallPlan:
        """Before a call: may raise Waiting or DocumentBudgetSpent instead."""
        ...

    def settle(self, plan: CallPlan, record: CallRecord, reply: ProviderReply | None) -> None:
        """After a call (reply None: it failed, `record` says how)."""
        ...
