"""The extractor interface every provider implements."""

from __future__ import annotations

from typing import Protocol

from pipeline.domain import ExtractionRequest, ProviderReply


class Extractor(Protocol):
    """Turns page images (and text) into a dict shaped like the schema, with usage.

    `call` makes exactly ONE provider call and never retries: retry policy belongs to the
    caller. Failures raise `TransientError` or `PermanentError` (with `request_id` set when the
    provider sent one); a completed call that produced unusable output returns a reply with
    `data=None` and `problem` set, or `truncated=True`.
    """

    provider: str
    model: str
    can_reask: bool  # False for deterministic extractors: asking again gives the same answer
    # True when extracting is CPU work on this machine (OCR, rules): it then runs in the
    # prepare stage on the CPU workers instead of the I/O stage.
    runs_locally: bool
    # The output budget (max_tokens) this extractor sends when a request sets none; None when
    # it leaves the limit to the server. Reservations and the truncation retry start from it.
    max_tokens: int | None

    def call(self, request: ExtractionRequest) -> ProviderReply: ...
