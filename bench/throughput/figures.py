"""A set-up's figures from its result rows, CPU samples and process logs."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from bench import common

_LOG_PATTERNS = {
    "lost acks": re.compile(r"Couldn't ack|MaxConnectionsError|Connection pool exhausted"),
    "task retries": re.compile(r"; retry \d+ in "),
    "rate-limit waits gave up": re.compile(r"over its shared rate limit"),
    "worker lost": re.compile(r"WorkerLostError"),
    "errors": re.compile(r"\b(ERROR|CRITICAL)\b"),
}


def scan_logs(paths: list[Path]) -> dict[str, int]:
    counts = dict.fromkeys(_LOG_PATTERNS, 0)
    for path in paths:
        try:
            text = path.read_text(errors="replace")
        except OSError:
            continue
        for name, pattern in _LOG_PATTERNS.items():
            counts[name] += len(pattern.findall(text))
    return counts


def latency_figures(rows: list[Any], uploaded: dict[str, float]) -> dict[str, Any]:
    finished = [r for r in rows if r.finished is not None and r.key in uploaded]
    e2e = [r.finished - uploaded[r.key] for r in finished]
    overhead = [r.finished - uploaded[r.key] - r.model_s for r in finished]
    intake = [r.created - uploaded[r.key] for r in finished]
    prepare = [r.prepared - r.created for r in finished if r.prepared]
    after_prepare = [r.finished - r.prepared - r.model_s for r in finished if r.prepared]
    return {
        "documents": len(finished),
        "statuses": _count(r.status for r in rows),
        "e2e p50 s": common.percentile(e2e, 50),
        "e2e p95 s": common.percentile(e2e, 95),
        "model s p50": common.percentile([r.model_s for r in finished], 50),
        "overhead p50 s": common.percentile(overhead, 50),
        "overhead p95 s": common.percentile(overhead, 95),
        "intake p95 s": common.percentile(intake, 95),
        "prepare (incl. queue) p95 s": common.percentile(prepare, 95),
        "extract minus model (incl. queue) p95 s": common.percentile(after_prepare, 95),
    }


def throughput_figures(
    rows: list[Any],
    uploaded: dict[str, float],
    samples: list[tuple[float, Any, Any]],
    ideal_per_min: float,
) -> dict[str, Any]:
    done = sorted((r for r in rows if r.finished is not None), key=lambda r: r.finished)
    out: dict[str, Any] = latency_figures(rows, uploaded)
    out["calls per document"] = (sum(r.calls for r in rows) / len(rows)) if rows else 0.0
    out["ideal pages/min"] = ideal_per_min
    if len(done) < 4:
        out["pages/min"] = out["overall pages/min"] = out["ratio to ideal"] = 0.0
        return out
    # Steady state: between the 10th and the 90th percentile of completions, so that the
    # ramp-up (the first calls take a whole latency) and the tail do not count.
    lo, hi = done[len(done) // 10], done[(len(done) * 9) // 10]
    pages_between = sum(r.pages for r in done[len(done) // 10 + 1 : (len(done) * 9) // 10 + 1])
    span = max(hi.finished - lo.finished, 1e-9)
    out["pages/min"] = pages_between / span * 60
    first_upload = min(uploaded.values()) if uploaded else done[0].created
    out["overall pages/min"] = (
        sum(r.pages for r in done) / max(done[-1].finished - first_upload, 1e-9) * 60
    )
    out["ratio to ideal"] = out["pages/min"] / ideal_per_min
    out["window s"] = span
    # The provider's mean concurrency and our CPU over the same window.
    before = _nearest(samples, lo.finished)
    after = _nearest(samples, hi.finished)
    if before is not None and after is not None and after[0] > before[0]:
        if before[2] and after[2]:
            dt = after[2]["at"] - before[2]["at"]
            out["mean in flight"] = (
                (after[2]["in_flight_area_s"] - before[2]["in_flight_area_s"]) / dt
                if dt > 0
                else float("nan")
            )
            out["peak in flight"] = after[2]["in_flight_peak"]
        cpu = common.cpu_delta(before[1], after[1])
        out["window cpu s"] = cpu
    return out


def _nearest(samples: list[tuple[float, Any, Any]], at: float) -> tuple[float, Any, Any] | None:
    return min(samples, key=lambda s: abs(s[0] - at)) if samples else None


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for v in values:
        counts[v] = counts.get(v, 0) + 1
    return counts
