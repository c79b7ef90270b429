"""CPU time per OCR step (decode, preprocess, detect, recognise), counted per thread."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

STEPS = ("decode", "preprocess", "detect", "recognise")


class _StepClock(threading.local):
    def __init__(self) -> None:
        self.totals: dict[str, float] = {}


_clock = _StepClock()


@contextmanager
def timed(step: str) -> Iterator[None]:
    """Add this thread's CPU time inside the block to `step` (see `step_cpu`)."""
    start = time.thread_time()
    try:
        yield
    finally:
        _clock.totals[step] = _clock.totals.get(step, 0.0) + time.thread_time() - start


def step_cpu(reset: bool = False) -> dict[str, float]:
    """CPU seconds this thread spent per OCR step (decode, preprocess, detect, recognise)."""
    totals = dict(_clock.totals)
    if reset:
        _clock.totals.clear()
    return totals
