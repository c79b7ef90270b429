"""The fake model server as a process: `python -m tests.support.fake_model_server`."""

from __future__ import annotations

import argparse
import signal
import time
from collections.abc import Callable
from typing import Any

from tests.support.fake_model_server.scripting import uniform_latency
from tests.support.fake_model_server.server import FakeModelServer


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.fake_model_server",
        description="Fake Anthropic Messages / OpenAI Chat Completions server for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per model call")
    parser.add_argument(
        "--jitter", type=float, default=0.0, help="spread latency uniformly by ± this many seconds"
    )
    parser.add_argument(
        "--fault-rate",
        type=float,
        default=0.0,
        help="share of model calls that fail with --fault-status",
    )
    parser.add_argument("--fault-status", type=int, default=429)
    parser.add_argument("--fault-retry-after", type=float, default=None)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this key (default: any)")
    args = parser.parse_args(argv)

    latency: float | Callable[[Any], float] = args.latency
    if args.jitter > 0:
        latency = uniform_latency(
            max(0.0, args.latency - args.jitter), args.latency + args.jitter, seed=args.seed
        )
    server = FakeModelServer(
        args.host,
        args.port,
        latency=latency,
        expected_api_key=args.api_key,
        fault_rate=args.fault_rate,
        fault_status=args.fault_status,
        fault_retry_after=args.fault_retry_after,
        seed=args.seed,
    )

    def _terminate(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminate)
    server.start()
    print(server.base_url, flush=True)
    print(f"anthropic base url: {server.anthropic_base_url}", flush=True)
    print(f"openai base url:    {server.openai_base_url}", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
        print(f"served {server.request_count} requests", flush=True)
    return 0
