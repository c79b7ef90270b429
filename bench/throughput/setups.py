"""The set-ups the benchmark compares (fitted, naive, high, scanned) and their workers."""

from __future__ import annotations

from dataclasses import dataclass, replace

from bench.throughput.options import Options


@dataclass
class Setup:
    name: str
    title: str
    limit: int
    docs: int
    workers: list[tuple[str, list[str], int]]  # (name, worker args, PAGEMILL_WORKER_CONCURRENCY)
    latency_docs: int = 0
    slots: int = 0  # calls the set-up can have in flight: min(limit, extract concurrency)
    scanned: bool = False  # scanned documents, OCR'd for grounding


def setups_for(opts: Options) -> list[Setup]:
    p = opts.prepare_concurrency

    def fitted(name: str, title: str, limit: int, docs: int, latency_docs: int) -> Setup:
        return Setup(
            name=name,
            title=title,
            limit=limit,
            docs=docs,
            latency_docs=latency_docs,
            slots=limit,
            workers=[
                (
                    "prepare worker",
                    ["worker", "--queues", "prepare", "--pool", "prefork", "--concurrency", str(p)],
                    p,
                ),
                (
                    "extract worker",
                    [
                        "worker",
                        "--queues",
                        "extract",
                        "--pool",
                        "threads",
                        "--concurrency",
                        str(limit),
                    ],
                    limit,
                ),
            ],
        )

    table = {
        "fitted": fitted(
            "fitted",
            f"fitted: prefork prepare c={p} + threads extract c={opts.limit}",
            opts.limit,
            opts.docs,
            opts.latency_docs,
        ),
        "naive": Setup(
            name="naive",
            title=f"naive: one prefork worker, all queues, c={opts.naive_concurrency}",
            limit=opts.limit,
            docs=opts.naive_docs,
            slots=min(opts.limit, opts.naive_concurrency),
            workers=[
                (
                    "worker (all queues)",
                    ["worker", "--pool", "prefork", "--concurrency", str(opts.naive_concurrency)],
                    opts.naive_concurrency,
                ),
            ],
        ),
        "high": fitted(
            "high",
            f"high: prefork prepare c={p} + threads extract c={opts.high_limit}",
            opts.high_limit,
            opts.high_docs,
            0,
        ),
        "scanned": replace(
            fitted(
                "scanned",
                f"scanned: prefork prepare c={p} + threads extract c={opts.limit}, invoice scans "
                "and receipt photos, OCR for grounding",
                opts.limit,
                opts.scanned_docs,
                0,
            ),
            scanned=True,
        ),
    }
    return [table[name] for name in opts.setups]
