"""What an extractor offers when its provider has a batch API (half price, answers within a day):
the protocol and the provider-neutral shapes of a batch and of one request's outcome."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal, Protocol, runtime_checkable

from pipeline.domain import ExtractionRequest, ProviderReply
from pipeline.errors import ErrorCategory

OutcomeKind = Literal["succeeded", "errored", "canceled", "expired"]


@dataclass(frozen=True, slots=True)
class BatchState:
    id: str
    status: str  # in_progress | canceling | ended
    expires_at: datetime | None = None
    ended_at: datetime | None = None

    @property
    def ended(self) -> bool:
        return self.status == "ended"


@dataclass(frozen=True, slots=True)
class BatchOutcome:
    """One request's result, matched to its request by `custom_id`."""

    custom_id: str
    kind: OutcomeKind
    reply: ProviderReply | None = None  # succeeded
    error_category: ErrorCategory | None = None  # errored, canceled, expired
    error_message: str | None = None
    transient: bool = False  # worth submitting again


@runtime_checkable
class BatchCapable(Protocol):
    """An extractor whose provider answers requests in batches. Every method is one HTTP
    request (or one streamed response) and maps failures onto our error taxonomy."""

    provider: str
    model: str

    def batch_params(self, request: ExtractionRequest) -> dict[str, Any]:
        """The request body one call would send (JSON-serialisable), to be stored and sent
        later as a batch entry."""
        ...

    def submit_batch(self, requests: Sequence[tuple[str, dict[str, Any]]]) -> BatchState:
        """Submit (custom_id, params) pairs as one batch."""
        ...

    def batch_state(self, batch_id: str) -> BatchState: ...

    def batch_results(
        self, batch_id: str, params: Mapping[str, dict[str, Any]]
    ) -> Iterator[BatchOutcome]:
        """The results of an ended batch, in any order; `params` (by custom_id) tells how to
        read each answer (its tool, its max_tokens)."""
        ...
