"""The throughput benchmark's command line: its options, defaults and the Options it builds."""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_DATABASE = "pagemill_bench"
DEFAULT_REDIS_DB = 12


@dataclass
class Options:
    setups: list[str]
    docs: int
    naive_docs: int
    high_docs: int
    scanned_docs: int
    scanned_pool: int
    limit: int
    high_limit: int
    latency_mean: float
    latency_dist: str
    latency_spread: float
    prepare_concurrency: int
    naive_concurrency: int
    latency_docs: int
    latency_load: float
    warmup_docs: int
    setup_timeout: float
    timeout: float
    database_url: str
    broker_url: str
    aws: str
    concurrency_env: bool
    log_dir: Path
    argv: list[str] = field(default_factory=list)


def parse_args(argv: Sequence[str] | None = None) -> Options:
    parser = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description="End-to-end throughput against a fake model provider.",
    )
    parser.add_argument(
        "--setups",
        default="fitted,naive,high,scanned",
        help="comma-separated: fitted, naive, high, scanned",
    )
    parser.add_argument(
        "--docs", type=int, default=600, help="one-page documents in the fitted run"
    )
    parser.add_argument(
        "--naive-docs",
        type=int,
        default=24,
        help="documents in the naive run (it does ~40 pages/min)",
    )
    parser.add_argument(
        "--high-docs", type=int, default=800, help="documents in the 200-in-flight run"
    )
    parser.add_argument(
        "--scanned-docs",
        type=int,
        default=160,
        help="documents in the scanned run (invoice scans and receipt photos)",
    )
    parser.add_argument(
        "--scanned-pool",
        type=int,
        default=24,
        help="distinct scanned documents the uploads cycle through",
    )
    parser.add_argument(
        "--limit",
        type=int,
        default=64,
        help="provider concurrency limit (PAGEMILL_RATE_LIMITS inflight)",
    )
    parser.add_argument("--high-limit", type=int, default=200)
    parser.add_argument("--latency-mean", type=float, default=3.0, help="seconds per model call")
    parser.add_argument(
        "--latency-dist", choices=("fixed", "uniform", "lognormal"), default="lognormal"
    )
    parser.add_argument(
        "--latency-spread", type=float, default=0.3, help="uniform: ± seconds; lognormal: sigma"
    )
    parser.add_argument("--prepare-concurrency", type=int, default=2)
    parser.add_argument("--naive-concurrency", type=int, default=2)
    parser.add_argument(
        "--latency-docs",
        type=int,
        default=40,
        help="documents in the fitted set-up's unsaturated phase (0: skip)",
    )
    parser.add_argument(
        "--latency-load",
        type=float,
        default=0.25,
        help="unsaturated phase: upload rate as a share of the provider bound",
    )
    parser.add_argument("--warmup-docs", type=int, default=6)
    parser.add_argument(
        "--setup-timeout", type=float, default=420.0, help="hard limit per set-up, seconds"
    )
    parser.add_argument(
        "--timeout", type=float, default=1200.0, help="hard limit for the whole run, seconds"
    )
    parser.add_argument(
        "--database-url",
        default=None,
        help=f"default: PAGEMILL_DATABASE_URL's server, db {DEFAULT_DATABASE}",
    )
    parser.add_argument(
        "--broker-url",
        default=None,
        help=f"default: PAGEMILL_BROKER_URL's server, db {DEFAULT_REDIS_DB}",
    )
    parser.add_argument(
        "--aws",
        choices=("fake", "moto"),
        default="fake",
        help="S3 + SQS server: bench.fakeaws (default) or moto (~10x the CPU)",
    )
    parser.add_argument(
        "--no-concurrency-env",
        dest="concurrency_env",
        action="store_false",
        help="start workers with --concurrency only, without setting "
        "PAGEMILL_WORKER_CONCURRENCY (which sizes the broker pool)",
    )
    parser.add_argument("--log-dir", type=Path, default=None)
    args = parser.parse_args(argv)

    from sqlalchemy.engine import make_url

    from pipeline.settings import load_settings

    settings = load_settings()
    database_url = args.database_url or make_url(settings.database_url).set(
        database=DEFAULT_DATABASE
    ).render_as_string(hide_password=False)
    broker_url = args.broker_url or re.sub(
        r"(/\d+)?$", f"/{DEFAULT_REDIS_DB}", settings.broker_url, count=1
    )
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(setups) - {"fitted", "naive", "high", "scanned"}
    if unknown:
        parser.error(f"unknown set-up(s): {', '.join(sorted(unknown))}")
    return Options(
        setups=setups,
        docs=args.docs,
        naive_docs=args.naive_docs,
        high_docs=args.high_docs,
        scanned_docs=args.scanned_docs,
        scanned_pool=args.scanned_pool,
        limit=args.limit,
        high_limit=args.high_limit,
        latency_mean=args.latency_mean,
        latency_dist=args.latency_dist,
        latency_spread=args.latency_spread,
        prepare_concurrency=args.prepare_concurrency,
        naive_concurrency=args.naive_concurrency,
        latency_docs=args.latency_docs,
        latency_load=args.latency_load,
        warmup_docs=args.warmup_docs,
        setup_timeout=args.setup_timeout,
        timeout=args.timeout,
        database_url=database_url,
        broker_url=broker_url,
        aws=args.aws,
        concurrency_env=args.concurrency_env,
        log_dir=args.log_dir or Path(tempfile.mkdtemp(prefix="pagemill-bench-")),
        argv=list(argv if argv is not None else sys.argv[1:]),
    )
