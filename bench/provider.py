"""The fake model provider for the throughput benchmark, in its own process.

`tests.support.fake_model_server` with three changes for long runs:

* it answers each call with the fields of the synthetic invoice whose number is in the prompt
  (the page's text layer), so results validate, ground and finish `done` with one call; a
  scanned page has no text layer: with `--answers FILE` (JSON, sha256 of a document's first
  page image as the pipeline sends it -> fields) it answers by the image instead;
* latency is drawn from a distribution with a given mean (fixed, uniform or log-normal);
* it forgets request bodies as soon as they are recorded (thousands of page images would
  otherwise pile up in memory), and it counts calls in flight, writing
  {calls, in_flight, in_flight_peak, in_flight_area_s, at} to a JSON file twice a second, so the
  benchmark can tell the mean concurrency the provider actually saw.

    python -m bench.provider --latency-mean 3.0 --latency-dist lognormal --latency-spread 0.3

prints its Anthropic base URL on the first line of stdout.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import math
import random
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import INVOICE_NUMBER, invoice_fields
from tests.support.fake_model_server import FakeModelServer, RecordedRequest, Scripted, reply


def latency_sampler(dist: str, mean: float, spread: float, seed: int) -> Any:
    """A callable drawing one latency in seconds with the given mean.

    fixed: always `mean`; uniform: mean ± spread seconds; lognormal: sigma = spread, with the
    median chosen so the mean is `mean` (a long right tail, like real model APIs)."""
    rng = random.Random(seed)
    lock = threading.Lock()
    if dist == "fixed":
        return lambda _request: mean
    if dist == "uniform":
        low, high = max(0.0, mean - spread), mean + spread

        def uniform(_request: Any) -> float:
            with lock:
                return rng.uniform(low, high)

        return uniform
    if dist == "lognormal":
        mu = math.log(mean) - spread * spread / 2

        def lognormal(_request: Any) -> float:
            with lock:
                return rng.lognormvariate(mu, spread)

        return lognormal
    raise ValueError(f"unknown latency distribution {dist!r}")


def first_image_digest(body: Any) -> str | None:
    """sha256 of the first base64 image in a request body (either API's shape)."""
    found = _first_image(body, 0)
    return hashlib.sha256(base64.b64decode(found)).hexdigest() if found else None


def _first_image(node: Any, depth: int) -> str | None:
    if depth > 50:
        return None
    if isinstance(node, dict):
        source = node.get("source")
        if node.get("type") == "image" and isinstance(source, dict):
            data = source.get("data")
            return data if isinstance(data, str) else None
        image_url = node.get("image_url")
        if node.get("type") == "image_url" and isinstance(image_url, dict):
            url = str(image_url.get("url", ""))
            return url.split(";base64,", 1)[1] if ";base64," in url else None
        children: Any = node.values()
    elif isinstance(node, list):
        children = node
    else:
        return None
    for child in children:
        found = _first_image(child, depth + 1)
        if found:
            return found
    return None


class BenchModelServer(FakeModelServer):
    def __init__(self, *args: Any, answers: dict[str, Any] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.answers = answers or {}
        self.stats_lock = threading.Lock()
        self.calls = 0
        self.in_flight = 0
        self.in_flight_peak = 0
        self.in_flight_area = 0.0  # integral of in_flight over time, in call-seconds
        self._last_change = time.monotonic()
        self.responder = self.answer

    def _record(self, *args: Any, **kwargs: Any) -> RecordedRequest:
        recorded = super()._record(*args, **kwargs)
        with self._lock:
            self._requests.clear()  # keep counts, not bodies
        return recorded

    def answer(self, request: RecordedRequest) -> Scripted | None:
        match = INVOICE_NUMBER.search(request.prompt_text())
        if match:
            return reply(fields=invoice_fields(int(match.group(1))))
        if self.answers:
            fields = self.answers.get(first_image_digest(request.body) or "")
            if fields is not None:
                return reply(fields=fields)
        return None

    def _change(self, delta: int) -> None:
        with self.stats_lock:
            now = time.monotonic()
            self.in_flight_area += self.in_flight * (now - self._last_change)
            self._last_change = now
            self.in_flight += delta
            if delta > 0:
                self.calls += 1
            self.in_flight_peak = max(self.in_flight_peak, self.in_flight)

    def _sleep(self, seconds: float) -> bool:
        # Only model calls sleep out a latency here: this is the provider "working".
        self._change(+1)
        try:
            return super()._sleep(seconds)
        finally:
            self._change(-1)

    def stats(self) -> dict[str, Any]:
        with self.stats_lock:
            now = time.monotonic()
            area = self.in_flight_area + self.in_flight * (now - self._last_change)
            return {
                "calls": self.calls,
                "in_flight": self.in_flight,
                "in_flight_peak": self.in_flight_peak,
                "in_flight_area_s": area,
                "at": now,
            }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.provider", description=__doc__)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency-mean", type=float, default=3.0)
    parser.add_argument(
        "--latency-dist", choices=("fixed", "uniform", "lognormal"), default="lognormal"
    )
    parser.add_argument("--latency-spread", type=float, default=0.3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--stats-file", type=Path, default=None)
    parser.add_argument(
        "--answers",
        type=Path,
        default=None,
        help="JSON: sha256 of a first page image -> the fields to answer",
    )
    args = parser.parse_args(argv)

    server = BenchModelServer(
        "127.0.0.1",
        args.port,
        latency=latency_sampler(
            args.latency_dist, args.latency_mean, args.latency_spread, args.seed
        ),
        seed=args.seed,
        answers=json.loads(args.answers.read_text()) if args.answers else None,
    )
    stop = threading.Event()

    def _terminate(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _terminate)
    signal.signal(signal.SIGINT, _terminate)
    server.start()
    print(server.anthropic_base_url, flush=True)
    try:
        while not stop.wait(0.5):
            if args.stats_file is not None:
                tmp = args.stats_file.with_suffix(".tmp")
                tmp.write_text(json.dumps(server.stats()))
                tmp.replace(args.stats_file)
    finally:
        server.stop()
        print(f"served {server.calls} model calls", file=sys.stderr, flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
