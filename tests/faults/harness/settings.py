"""The fault stack's settings: short recovery clocks, and the outage tests' length and budget."""

from __future__ import annotations

import os

API_KEY = "sk-test-not-a-real-key"

# Short clocks so that recovery happens within a test: a lease outlives the task time limit,
# the broker's visibility timeout outlives a task plus its longest retry wait (the settings
# validate both), and the sweep runs every two seconds. workers/app.py derives the soft time
# limit as max(limit - 30, 10): 10 s here, below the 15 s hard limit, so that a slow task (a
# pool process's first, which pays for its imports) gets an exception instead of a SIGKILL.
RECOVERY_SETTINGS = {
    "PAGEMILL_TASK_TIME_LIMIT_S": "15",
    "PAGEMILL_LEASE_S": "17",
    "PAGEMILL_VISIBILITY_TIMEOUT_S": "60",
    "PAGEMILL_RETRY_BASE_S": "0.5",
    "PAGEMILL_RETRY_CAP_S": "5",
    "PAGEMILL_TASK_MAX_RETRIES": "20",
    "PAGEMILL_STUCK_AFTER_S": "10",
    "PAGEMILL_SWEEP_INTERVAL_S": "2",
    "PAGEMILL_ANTHROPIC_TIMEOUT_S": "8",
    "PAGEMILL_RATE_LIMITS": "",  # none unless a test sets one
}


OUTAGE_S = float(os.environ.get("PAGEMILL_FAULT_OUTAGE_S", "45"))
FULL_SETTINGS = os.environ.get("PAGEMILL_FAULT_SETTINGS", "scaled") == "default"

# The retry budget scaled down for the suite: at most 0.25 + 0.5 + 1 + 2 + 2.5 + 2.5 = 8.75 s
# of waits for six retries, so that an outage of 45 s outlasts it five times over; outage waits
# try again at most 2.5 s apart. The task time limit (soft: 120 s) lets an answer that arrived
# wait in its process for a database that is down for 45 s (or 90 s); the lease and the broker's
# visibility timeout outlast it, as the settings require. Stuck-document recovery stays at its
# default (30 min): nothing here may rely on it.
SCALED_OUTAGE_SETTINGS = {
    "PAGEMILL_TASK_MAX_RETRIES": "6",
    "PAGEMILL_RETRY_BASE_S": "0.25",
    "PAGEMILL_RETRY_CAP_S": "2.5",
    "PAGEMILL_WAIT_CAP_S": "2.5",
    "PAGEMILL_TASK_TIME_LIMIT_S": "150",
    "PAGEMILL_LEASE_S": "160",
    "PAGEMILL_VISIBILITY_TIMEOUT_S": "400",
    "PAGEMILL_SWEEP_INTERVAL_S": "2",
    "PAGEMILL_ANTHROPIC_TIMEOUT_S": "8",
}


def outage_settings(**overrides: str) -> dict[str, str]:
    """The settings of an outage test: the scaled ones, or none (the pipeline's defaults) when
    PAGEMILL_FAULT_SETTINGS=default; `overrides` either way."""
    return {**({} if FULL_SETTINGS else SCALED_OUTAGE_SETTINGS), **overrides}


def outage_timeout(settle_s: float = 120.0) -> float:
    """How long to wait for every document after an outage ended: the longest wait between
    tries (2.5 s scaled, 300 s by default), a sweep, and the work itself."""
    return settle_s + (330.0 if FULL_SETTINGS else 10.0)
