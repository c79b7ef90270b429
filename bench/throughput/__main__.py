"""`python -m bench.throughput`: run the throughput benchmark with the options given."""

from __future__ import annotations

from bench.throughput.benchmark import main

if __name__ == "__main__":
    raise SystemExit(main())
