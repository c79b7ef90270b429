"""A fault test's report: its figures printed, and appended to $PAGEMILL_FAULT_REPORT."""

from __future__ import annotations

import json
import os
from datetime import datetime

from tests.faults.harness.figures import Figures

REPORT_ENV = "PAGEMILL_FAULT_REPORT"


def report(figures: Figures) -> None:
    public = figures.public()
    print(
        f"\n[faults] {public['test']}: pushed={public['pushed']} lost={public['lost']} "
        f"duplicate_results={public['duplicate_results']} "
        f"dead_letters={public['dead_letters']} paid_twice={public['paid_twice']} "
        f"duplicate_paid_calls={public['duplicate_paid_calls']} "
        f"model_requests={public['model_requests']} "
        f"unrecorded_requests={public['unrecorded_requests']} "
        f"cut_off_calls={public['cut_off_calls']} "
        f"errors={public['error_categories']} seconds={public['seconds']}"
    )
    print(f"[faults] {json.dumps(public, default=str, sort_keys=True)}")
    path = os.environ.get(REPORT_ENV)
    if path:
        public["recorded_at"] = datetime.now().astimezone().isoformat(timespec="seconds")
        with open(path, "a", encoding="utf-8") as out:
            out.write(json.dumps(public, default=str, sort_keys=True) + "\n")
