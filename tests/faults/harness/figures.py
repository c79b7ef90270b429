"""The figures of a fault test, measured for its bucket: documents, results, model calls."""

from __future__ import annotations

import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from sqlalchemy import text

if TYPE_CHECKING:
    from tests.faults.harness.stack import FaultStack

FINAL = ("done", "failed", "needs_review")


class Figures(dict[str, Any]):
    """The figures of one run; keys starting with "_" hold raw rows for test-specific checks
    and stay out of reports and assertion messages."""

    def public(self) -> dict[str, Any]:
        return {k: v for k, v in self.items() if not k.startswith("_")}

    def __repr__(self) -> str:
        return repr(self.public())


def measure(stack: FaultStack, test: str, *, prefix: str = "", **extra: Any) -> Figures:
    """The figures (see the package docstring) for the keys starting with `prefix`."""
    with stack.engine.connect() as conn:
        docs = list(
            conn.execute(
                text(
                    """
                    SELECT d.id, d.key, d.status, d.error_category, d.finished_at,
                           (SELECT count(*) FROM extractions e
                             WHERE e.document_id = d.id) AS results,
                           (SELECT count(*) FROM extractions e
                             WHERE e.document_id = d.id AND e.valid) AS valid_results,
                           (SELECT count(*) FROM vlm_calls c
                             WHERE c.document_id = d.id AND c.outcome = 'ok') AS ok_calls
                      FROM documents d
                     WHERE d.bucket = :b AND starts_with(d.key, :p) ORDER BY d.id
                    """
                ),
                {"b": stack.bucket.bucket, "p": prefix},
            ).mappings()
        )
        calls = list(
            conn.execute(
                text(
                    """
                    SELECT c.outcome, c.error_category, c.cost_usd, c.input_tokens,
                           c.output_tokens, c.request_id, d.key
                      FROM vlm_calls c JOIN documents d ON d.id = c.document_id
                     WHERE d.bucket = :b AND starts_with(d.key, :p)
                    """
                ),
                {"b": stack.bucket.bucket, "p": prefix},
            ).mappings()
        )
        dead_letters = conn.execute(
            text(
                """
                SELECT count(*) FROM dead_letters l JOIN documents d ON d.id = l.document_id
                 WHERE d.bucket = :b AND starts_with(d.key, :p) AND l.replayed_at IS NULL
                """
            ),
            {"b": stack.bucket.bucket, "p": prefix},
        ).scalar_one()
        paid_twice = conn.execute(
            text(
                """
                SELECT count(*) FROM (
                    SELECT c.document_id, page
                      FROM vlm_calls c JOIN documents d ON d.id = c.document_id,
                           unnest(c.page_indexes) AS page
                     WHERE d.bucket = :b AND starts_with(d.key, :p) AND c.outcome = 'ok'
                     GROUP BY c.document_id, page HAVING count(*) > 1
                ) AS pages
                """
            ),
            {"b": stack.bucket.bucket, "p": prefix},
        ).scalar_one()
    by_key: dict[str, list[Any]] = {}
    for doc in docs:
        by_key.setdefault(doc["key"], []).append(doc)
    final_keys = {key for key, rows in by_key.items() if any(r["status"] in FINAL for r in rows)}
    requests = [
        r for r in stack.model_requests() if (stack.book.key_for(r) or "").startswith(prefix)
    ]
    pushed = {key for key in stack.pushed if key.startswith(prefix)}
    wall_offset = time.time() - time.monotonic()
    finished = {
        d["key"]: d["finished_at"].timestamp() for d in docs if d["finished_at"] is not None
    }
    after_finish = 0
    per_key_requests: Counter[str] = Counter()
    for request in requests:
        key = stack.book.key_for(request)
        if key is None:
            continue
        per_key_requests[key] += 1
        if key in finished and request.received_at + wall_offset > finished[key] + 0.05:
            after_finish += 1
    errors = [c for c in calls if c["outcome"] == "error"]
    figures = Figures(
        {
            "test": test,
            "pushed": len(pushed),
            "documents": len(docs),
            "done": sum(1 for d in docs if d["status"] == "done"),
            "failed": sum(1 for d in docs if d["status"] == "failed"),
            "lost": len(pushed - final_keys),
            "duplicate_documents": sum(len(rows) - 1 for rows in by_key.values()),
            "duplicate_results": sum(max(0, d["results"] - 1) for d in docs),
            "missing_results": sum(
                1 for d in docs if d["status"] == "done" and d["valid_results"] != 1
            ),
            "failed_without_category": sum(
                1 for d in docs if d["status"] == "failed" and not d["error_category"]
            ),
            "ok_calls": sum(d["ok_calls"] for d in docs),
            "duplicate_paid_calls": sum(max(0, d["ok_calls"] - 1) for d in docs),
            "model_requests": len(requests),
            "max_requests_per_document": max(per_key_requests.values(), default=0),
            "requests_after_finish": after_finish,
            "unrecorded_requests": max(0, len(requests) - len(calls)),
            # Rows left `started`: calls whose worker died before the answer was stored.
            "cut_off_calls": sum(1 for c in calls if c["outcome"] == "started"),
            "error_calls": len(errors),
            "error_categories": dict(Counter(str(c["error_category"]) for c in errors)),
            "priced_error_calls": sum(
                1
                for c in calls
                if c["outcome"] != "ok"
                and ((c["cost_usd"] or 0) > 0 or c["input_tokens"] or c["output_tokens"])
            ),
            "unpriced_ok_calls": sum(
                1 for c in calls if c["outcome"] == "ok" and not (c["cost_usd"] or 0) > 0
            ),
            "dead_letters": int(dead_letters),
            "paid_twice": int(paid_twice),
            "process_crashes": len(stack.crashes),
            "exits_0": sum(1 for _, code, _ in stack.crashes if code == 0),
            "sweep_reenqueues": stack.sweep_reenqueues(),
            "time_limit_hits": stack.time_limit_hits(),
            "seconds": round(time.monotonic() - stack.started, 1),
        }
    )
    figures["_calls"] = calls  # for test-specific assertions; not reported
    figures["_requests"] = requests
    figures.update(extra)
    return figures
