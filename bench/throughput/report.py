"""The printed report of a throughput run and its final `... ratio:` lines."""

from __future__ import annotations

from typing import Any

from bench import common
from bench.throughput.bounds import accounted_groups, bound_of, ceiling, other_load
from bench.throughput.options import Options
from bench.throughput.scanned import STEP_ORDER


def summarise(opts: Options, results: dict[str, Any]) -> None:
    setups = results["setups"]
    print()
    print(
        f"## throughput ({common.cores()} cores; latency {opts.latency_dist}, mean "
        f"{opts.latency_mean:g} s, spread {opts.latency_spread:g}; one-page invoices)"
    )
    print()
    rows = []
    for name, fig in setups.items():
        if "pages/min" not in fig:
            rows.append([name, "failed: " + fig.get("error", "?").splitlines()[0]])
            continue
        workers = fig["worker names"]
        pipeline = ["ingest", *workers]
        bound, bound_value, ratio = bound_of(fig)
        fig["bound"], fig["bound pages/min"], fig["ratio to bound"] = bound, bound_value, ratio
        fig["pipeline cpu ceiling pages/min"] = ceiling(fig, pipeline)
        fig["cpu ceiling all cores pages/min"] = ceiling(fig, accounted_groups(fig))
        fig["other load in window (cores)"] = other_load(fig)
        rows.append(
            [
                name,
                f"{fig['pages']}" + (" (TIMED OUT)" if fig.get("timed out") else ""),
                fig["pages/min"],
                fig["overall pages/min"],
                fig["ideal pages/min"],
                fig.get("ratio to ideal", float("nan")),
                f"{bound} {bound_value:,.0f}",
                ratio,
                fig.get("mean in flight", float("nan")),
                fig["e2e p50 s"],
                fig["e2e p95 s"],
                fig["worker cpu ms/page"],
                fig["pipeline cpu ms/page"],
                fig["accounted cpu ms/page"],
                " / ".join(f"{fig['peak pss MB'][w]:.0f}" for w in workers),
            ]
        )
    print(
        common.table(
            [
                "set-up",
                "pages",
                "pages/min (steady)",
                "pages/min (overall)",
                "ideal",
                "ratio",
                "bound",
                "ratio to bound",
                "mean in flight",
                "e2e p50 s",
                "e2e p95 s",
                "worker CPU ms/page",
                "pipeline CPU ms/page",
                "all CPU ms/page",
                "peak PSS MB/worker",
            ],
            rows,
        )
    )
    print()
    print(
        "pages/min (steady): completions between the 10th and 90th percentile; ideal: limit ÷ "
        "mean latency × 60; e2e: upload → documents.finished_at, where the upload time is when "
        "the intake started (all documents are uploaded first, then the intake is started on "
        "their events: this includes queueing); worker CPU: the worker process trees; "
        "pipeline: workers + intake; all: + fake provider, S3+SQS server, this driver, Postgres "
        "backends, Redis."
    )
    for name, fig in setups.items():
        if "cpu s" not in fig:
            continue
        print()
        print(f"### {name}: {fig['title']}")
        print()
        cpu = fig["cpu s"]
        pages = fig["pages"]
        print(
            common.table(
                ["process", "CPU s", "CPU ms/page", "peak PSS MB", "peak RSS (VmHWM) MB"],
                [
                    [
                        n if ":" not in n else f"  ({n}, included above)",
                        cpu[n],
                        1000 * cpu[n] / pages,
                        fig["peak pss MB"].get(n, float("nan")),
                        fig["peak hwm MB"].get(n, float("nan")),
                    ]
                    for n in cpu
                    if n not in ("machine busy", "wall")
                ]
                + [
                    [
                        "machine (all processes)",
                        cpu["machine busy"],
                        1000 * cpu["machine busy"] / pages,
                        None,
                        None,
                    ]
                ],
            )
        )
        extra = {
            "calls the set-up can have in flight": f"{fig['slots']} (÷ mean latency = "
            f"{fig['slots pages/min']:,.0f} pages/min)",
            "statuses": fig["statuses"],
            "calls per document": round(fig["calls per document"], 3),
            "upload rate docs/s": round(fig["upload rate (docs/s)"], 1),
            "peak in flight (provider)": fig.get("peak in flight"),
            "other jobs on the machine (cores)": f"{fig['other load (cores)']:.2f}",
            "CPU ceiling, all accounted processes on all cores (pages/min)": round(
                fig["cpu ceiling all cores pages/min"]
            ),
            "CPU ceiling, pipeline alone (workers + intake) on all cores (pages/min)": round(
                fig["pipeline cpu ceiling pages/min"]
            ),
            "log counts": fig.get("log counts"),
        }
        print()
        for k, v in extra.items():
            print(f"- {k}: {v}")
        if "unsaturated" in fig:
            u = fig["unsaturated"]
            print()
            print(
                f"unsaturated phase ({u['documents']} documents paced at "
                f"{u['upload rate (docs/s)']:.1f}/s, {opts.latency_load:.0%} of the bound):"
            )
            print()
            print(
                common.table(
                    [
                        "e2e p50 s",
                        "e2e p95 s",
                        "model call p50 s",
                        "overhead p50 s",
                        "overhead p95 s",
                        "intake p95 s",
                        "prepare+queue p95 s",
                        "extract-model+queue p95 s",
                    ],
                    [
                        [
                            u["e2e p50 s"],
                            u["e2e p95 s"],
                            u["model s p50"],
                            u["overhead p50 s"],
                            u["overhead p95 s"],
                            u["intake p95 s"],
                            u["prepare (incl. queue) p95 s"],
                            u["extract minus model (incl. queue) p95 s"],
                        ]
                    ],
                )
            )
    steps = results.get("scanned steps")
    if steps:
        print()
        print(
            f"### scanned: CPU per scanned page by step (this process, {steps['documents']} "
            f"documents, {steps['pages']} pages, fast OCR setting)"
        )
        print()
        per = steps["ms/page"]
        print(
            common.table(
                [*STEP_ORDER, "total"],
                [[*(per.get(k, 0.0) for k in STEP_ORDER), steps["total ms/page"]]],
            )
        )
        print()
        print(
            f"values grounded in the OCR words: {steps['grounded']}/{steps['values']} "
            f"({steps['grounded'] / max(steps['values'], 1):.1%}); the throughput run's own "
            "CPU per page includes Celery, the database, the model call's client side."
        )
    if (
        "fitted" in setups
        and "naive" in setups
        and "pages/min" in setups["naive"]
        and "pages/min" in setups["fitted"]
    ):
        f, n = setups["fitted"], setups["naive"]
        print()
        print(
            f"naive/fitted: throughput {n['pages/min'] / f['pages/min']:.3f} "
            f"(fitted is {f['pages/min'] / n['pages/min']:.1f}x), worker CPU per page "
            f"{n['worker cpu ms/page'] / f['worker cpu ms/page']:.2f}, "
            f"peak PSS {sum(n['peak pss MB'][w] for w in n['worker names']):.0f} MB vs "
            f"{sum(f['peak pss MB'][w] for w in f['worker names']):.0f} MB"
        )
    if "high" in setups and "pages/min" in setups["high"]:
        h = setups["high"]
        print(
            f"high ({opts.high_limit} in flight): {h['pages/min']:,.0f} pages/min = "
            f"{h['ratio to bound']:.2f} of its {h['bound']} bound "
            f"({h['bound pages/min']:,.0f} pages/min); provider bound "
            f"{h['ideal pages/min']:,.0f}; other jobs used "
            f"{h['other load in window (cores)']:.2f} cores; pipeline-only CPU ceiling on all "
            f"cores "
            f"{h['pipeline cpu ceiling pages/min']:,.0f}"
        )
    print()
    path = common.write_results("throughput", results)
    print(f"figures saved to {path.relative_to(common.REPO_ROOT)}")
    print(common.reproduce_line("bench.throughput", opts.argv))


def scanned_headline(results: dict[str, Any]) -> str | None:
    """`scanned ratio: X.XX (bound: provider|cpu), cpu per scanned page: N ms`: the scanned
    set-up's steady pages/min over its bound, and its pipeline CPU (workers + intake) per
    page."""
    fig = results["setups"].get("scanned", {})
    if "ratio to bound" not in fig:
        return None
    return (
        f"scanned ratio: {fig['ratio to bound']:.2f} (bound: {fig['bound']}), "
        f"cpu per scanned page: {fig['pipeline cpu ms/page']:.0f} ms"
    )


def headline(results: dict[str, Any]) -> str | None:
    """`throughput ratio: X.XX (bound: provider|cpu)` of the first set-up that has figures."""
    for name in ("fitted", "high", "naive"):
        fig = results["setups"].get(name, {})
        if "ratio to bound" in fig:
            return f"throughput ratio: {fig['ratio to bound']:.2f} (bound: {fig['bound']})"
    return None
