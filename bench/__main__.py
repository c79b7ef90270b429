"""`python -m bench` (`make bench`): every benchmark with defaults sized for a 2-core machine.

    python -m bench                 # pages, stages, cost, throughput (several minutes)
    python -m bench --quick         # smaller runs, for checking that everything works

Ends with the line `throughput ratio: X.XX (bound: provider|cpu)` for the fitted set-up: its
steady pages/min divided by the lower of the provider's bound (limit ÷ mean latency) and the CPU
ceiling measured in the same run; then `scanned ratio: X.XX (bound: provider|cpu), cpu per
scanned page: N ms`, the same for the scanned workload, with its CPU per page.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable

from bench import cost, pages, stages, throughput


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--quick", action="store_true", help="smaller runs (about two minutes)")
    parser.add_argument(
        "--skip", default="", help="comma-separated: pages, stages, cost, throughput"
    )
    args = parser.parse_args(argv)
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}

    codes: list[int] = []
    line = None
    scanned_line = None

    def guarded(name: str, fn: Callable[[], int]) -> None:
        if name in skip:
            return
        try:
            codes.append(fn())
        except Exception as exc:  # noqa: BLE001 — report and go on with the next benchmark
            print(f"{name} benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            codes.append(1)

    def run_throughput() -> int:
        nonlocal line, scanned_line
        targs = (
            [
                "--docs",
                "200",
                "--naive-docs",
                "10",
                "--high-docs",
                "300",
                "--latency-docs",
                "20",
                "--scanned-docs",
                "60",
                "--scanned-pool",
                "12",
            ]
            if args.quick
            else []
        )
        opts = throughput.parse_args(targs)
        results = throughput.run(opts)
        line = throughput.headline(results)
        scanned_line = throughput.scanned_headline(results)
        ok = all("pages/min" in f and not f.get("timed out") for f in results["setups"].values())
        return 0 if ok and len(results["setups"]) == len(opts.setups) else 1

    guarded(
        "pages",
        lambda: pages.main(
            ["--repeat", "3", "--big-pages", "200", "--ocr-docs", "4"] if args.quick else []
        ),
    )
    guarded("stages", lambda: stages.main(["--docs", "20"] if args.quick else []))
    guarded("cost", lambda: cost.main(["--docs", "40"] if args.quick else []))
    guarded("throughput", run_throughput)
    print()
    print(line or "throughput ratio: n/a (throughput benchmark skipped or failed)")
    print(scanned_line or "scanned ratio: n/a (scanned workload skipped or failed)")
    return max(codes, default=0)


if __name__ == "__main__":
    sys.exit(main())
