"""Retry policy as data: exponential backoff with full jitter, honouring the server's hint."""

from __future__ import annotations

import random
from dataclasses import dataclass

from pipeline.errors import PipelineError


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int = 6
    base_s: float = 2.0
    cap_s: float = 120.0

    def should_retry(self, error: BaseException, retries_done: int) -> bool:
        return (
            isinstance(error, PipelineError) and error.transient and retries_done < self.max_retries
        )

    def delay_s(self, retries_done: int, retry_after_s: float | None = None) -> float:
        """Seconds to wait before retry number `retries_done + 1`.

        A server's retry-after is a floor (waiting less only earns another 429) but is capped,
        so a hostile or confused header cannot park a task for hours.
        """
        backoff = random.uniform(0, min(self.cap_s, self.base_s * 2**retries_done))
        if retry_after_s is not None:
            backoff = max(backoff, retry_after_s)
        return min(backoff, self.cap_s)
