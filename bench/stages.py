"""Where a page's CPU goes: the two real use cases (`prepare_document`, `extract_document`) run
in one process, one one-page invoice at a time, with every step timed in CPU time (the calling
thread's, so the in-process S3 server and fake provider do not count).

    python -m bench.stages --docs 60
    python -m bench.stages --scanned --docs 48    # the scanned workload, OCR for grounding

Steps are timed exclusively (a step's time leaves out the timed steps inside it), so the rows
add up to the total; "other" is what no wrapper covered. Celery (task receipt, ack, publishing
the next stage) is not in here: the throughput benchmark's worker CPU per page minus this total
is that share. Postgres backend CPU is measured from /proc over the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import sys
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from bench import common
from bench.common import log

DATABASE = "pagemill_bench"
REDIS_DB = 12


class StepTimer:
    """Exclusive CPU time per label, for wrapped functions in the calling thread."""

    def __init__(self) -> None:
        self.totals: dict[str, float] = defaultdict(float)
        self.calls: Counter[str] = Counter()
        self._stack: list[list[float]] = []
        self._undo: list[tuple[Any, str, Any]] = []
        self.active = False

    def enter(self) -> None:
        self._stack.append([time.thread_time(), 0.0])

    def exit(self, label: str) -> None:
        start, children = self._stack.pop()
        elapsed = time.thread_time() - start
        if self.active:
            self.totals[label] += elapsed - children
            self.calls[label] += 1
        if self._stack:
            self._stack[-1][1] += elapsed

    def wrap(self, owner: Any, name: str, label: str) -> None:
        raw = owner.__dict__[name] if isinstance(owner, type) else getattr(owner, name)
        is_classmethod = isinstance(raw, classmethod)
        func = raw.__func__ if is_classmethod else raw

        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            self.enter()
            try:
                return func(*args, **kwargs)
            finally:
                self.exit(label)

        setattr(owner, name, classmethod(wrapper) if is_classmethod else wrapper)
        self._undo.append((owner, name, raw))

    def restore(self) -> None:
        for owner, name, raw in reversed(self._undo):
            setattr(owner, name, raw)
        self._undo.clear()


def instrument(timer: StepTimer) -> None:
    import pymupdf
    from sqlalchemy.pool import base as pool_base

    from pipeline import pages, storage
    from pipeline.db import repository as repo
    from pipeline.extractors import anthropic as anthropic_extractor
    from pipeline.ratelimit import RedisRateLimiter
    from pipeline.schemas import SchemaSpec
    from pipeline.usecases import extract, finish, process
    from pipeline.usecases import verify as verify_module

    w = timer.wrap
    # shared
    w(process, "_claim", "claim (UPDATE … RETURNING, stored-result check)")
    w(pool_base._ConnectionFairy, "_checkout", "connection checkout (pool pre-ping)")

    @contextlib.contextmanager
    def transaction(factory: Any) -> Iterator[Any]:
        with factory() as session:
            session.begin()
            try:
                yield session
            except BaseException:
                session.rollback()
                raise
            timer.enter()
            try:
                session.commit()
            finally:
                timer.exit("commit")

    # Transactions open in both: the stages in process, the end of a document in finish.
    for module in (process, finish):
        timer._undo.append((module, "transaction", module.transaction))
        module.transaction = transaction
    # prepare
    w(storage, "download", "download (S3 GET, boto3)")
    w(process, "open_document", "open PDF")
    w(pages.PdfDocument, "page", "page: words, scan check, misc")
    w(pymupdf.Page, "get_textpage", "page: text layer (one text page)")
    w(pymupdf.Page, "get_text", "page: text layer (one text page)")
    w(pymupdf.Page, "get_pixmap", "page: render (get_pixmap)")
    w(process, "ensure_words", "page: OCR for grounding (fast setting)")
    w(pages, "encode_pixmap_jpeg", "page: JPEG encode")
    w(repo, "record_source", "record source facts (size, hash, pages)")
    w(repo, "record_pages", "page rows (INSERT … ON CONFLICT)")
    w(repo, "store_payloads", "page payloads (image, text, words)")
    w(repo, "advance_stage", "advance stage (same transaction as the pages)")
    # extract
    w(repo, "load_pages", "load pages (once when one chunk)")
    w(RedisRateLimiter, "acquire", "rate limiter (Redis script) acquire+release")
    w(RedisRateLimiter, "release", "rate limiter (Redis script) acquire+release")
    w(anthropic_extractor.AnthropicExtractor, "build_params", "build request (base64, blocks)")
    w(SchemaSpec, "json_schema", "tool JSON schema (cached, copied per call)")
    w(anthropic_extractor.AnthropicExtractor, "call", "SDK call (client side of HTTP)")
    w(anthropic_extractor, "parse_message", "parse reply")
    w(extract, "validate", "validate (pydantic)")
    w(finish, "verify", "verify: rules")
    w(verify_module, "ground", "verify: grounding")
    for name in ("record_calls", "save_extraction", "finish_document"):
        w(repo, name, "store call rows, result, finish document + pages")


def _servers(answers: dict[str, Any] | None = None) -> tuple[Any, Any]:
    from bench.fakeaws import make_server
    from bench.provider import BenchModelServer

    aws = make_server()
    threading.Thread(target=aws.serve_forever, daemon=True).start()
    provider = BenchModelServer(latency=0.0, answers=answers).start()
    return aws, provider


# Final outcomes: scanned documents cycle through a pool, so their repeats are flagged as
# possible duplicates and go to review.
FINAL = ("done", "needs_review")


@dataclass(frozen=True, slots=True)
class Workload:
    data: bytes
    extension: str
    schema: str
    pages: int


def _workload(docs: int, scanned: bool) -> tuple[list[Workload], dict[str, Any]]:
    """The documents to time, and the fake provider's answers by first image (a scan has no
    text layer for it to read an invoice number from)."""
    if not scanned:
        return [Workload(common.invoice_pdf(i + 1), "pdf", "invoice", 1) for i in range(docs)], {}
    from bench import scans

    pool = scans.workload(24)
    answers = {scans.answer_key(d): d.fields for d in pool}
    items = [Workload(d.data, d.extension, d.schema, d.pages) for d in pool]
    return (items * (docs // len(items) + 1))[:docs], answers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.stages", description=__doc__)
    parser.add_argument("--docs", type=int, default=60, help="documents to time")
    parser.add_argument(
        "--scanned",
        action="store_true",
        help="the throughput benchmark's scanned pool (invoice scans, receipt photos) instead of "
        "one-page digital invoices, OCR'd for grounding",
    )
    parser.add_argument("--database-url", default=None)
    parser.add_argument("--broker-url", default=None)
    args = parser.parse_args(argv)
    argv_list = list(argv if argv is not None else sys.argv[1:])

    from sqlalchemy.engine import make_url

    from bench.throughput import flush_redis, reset_database
    from pipeline.settings import load_settings

    base = load_settings()
    database_url = args.database_url or make_url(base.database_url).set(
        database=DATABASE
    ).render_as_string(hide_password=False)
    broker_url = args.broker_url or base.broker_url.rsplit("/", 1)[0] + f"/{REDIS_DB}"
    warm = 3
    workload, answers = _workload(args.docs + warm, args.scanned)
    aws, provider = _servers(answers)
    endpoint = f"http://127.0.0.1:{aws.server_address[1]}"
    try:
        log(f"resetting {DATABASE} and Redis db {REDIS_DB}")
        reset_database(database_url)
        flush_redis(broker_url)
        figures = run(
            workload,
            warm,
            database_url,
            broker_url,
            endpoint,
            provider.anthropic_base_url,
            scanned=args.scanned,
        )
    finally:
        provider.stop()
        aws.shutdown()
    report(figures, "scanned documents" if args.scanned else "one-page invoices")
    common.write_results("stages", figures)
    print(common.reproduce_line("bench.stages", argv_list))
    return 0


def run(
    workload: list[Workload],
    warm: int,
    database_url: str,
    broker_url: str,
    endpoint: str,
    provider_url: str,
    *,
    scanned: bool,
) -> dict[str, Any]:
    import logging

    from pipeline import ocr, storage
    from pipeline.costing import load_price_table
    from pipeline.db import repository as repo
    from pipeline.db.session import make_engine, make_session_factory, transaction
    from pipeline.domain import ObjectRef
    from pipeline.extractors import build_extractor
    from pipeline.ratelimit import make_rate_limiter
    from pipeline.settings import load_settings
    from pipeline.usecases import process

    logging.disable(logging.WARNING)
    ocr.one_thread_per_call()  # as in a worker process: thread CPU is then all of it
    settings = load_settings(
        database_url=database_url,
        broker_url=broker_url,
        s3_endpoint_url=endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        provider="anthropic",
        anthropic_api_key="bench-not-a-real-key",
        anthropic_base_url=provider_url,
        rate_limits="anthropic:*=inflight:64",
        ocr_scanned_pages=scanned,
        # Scanned documents cycle through a pool: the cache would answer the repeats.
        page_cache=False,
    )
    engine = make_engine(settings.database_url, pool_size=2)
    extractors: dict[str, Any] = {}
    deps = process.Collaborators(
        sessions=make_session_factory(engine),
        s3=storage.make_s3_client(settings),
        extractor_for=lambda name: extractors.setdefault(name, build_extractor(settings, name)),
        prices=load_price_table(settings.price_table),
        settings=settings,
        limiter=make_rate_limiter(settings.rate_limits, broker_url),
    )
    deps.s3.create_bucket(Bucket="bench-stages")
    ids: list[tuple[int, int]] = []  # (document id, pages)
    log(f"uploading {len(workload)} documents")
    for i, item in enumerate(workload):
        key = f"in/{i:05d}.{item.extension}"
        deps.s3.put_object(Bucket="bench-stages", Key=key, Body=item.data)
        ref = storage.head_object(deps.s3, ObjectRef("bench-stages", key, ""))
        with transaction(deps.sessions) as session:
            document_id = repo.register_document(session, ref, item.schema, "anthropic")[0]
        ids.append((document_id, item.pages))
    timer = StepTimer()
    instrument(timer)
    pg = common.Group("postgres", match=common.postgres_backends(DATABASE))
    totals = {"prepare": 0.0, "extract": 0.0}
    steps: dict[str, dict[str, float]] = {}
    pages = 0
    try:
        for n, (document_id, page_count) in enumerate(ids):
            measured = n >= warm
            if n == warm:
                pg_start = common.read_cpu([pg])
            pages += page_count if measured else 0
            for stage, fn in (
                ("prepare", process.prepare_document),
                ("extract", process.extract_document),
            ):
                timer.totals.clear()
                timer.active = measured
                start = time.thread_time()
                outcome = fn(deps, document_id)
                spent = time.thread_time() - start
                if stage == "extract" and getattr(outcome, "value", outcome) not in FINAL:
                    log(f"document {document_id}: {outcome}")
                if measured:
                    totals[stage] += spent
                    bucket = steps.setdefault(stage, defaultdict(float))
                    for label, value in timer.totals.items():
                        bucket[label] += value
                    bucket["other"] += spent - sum(timer.totals.values())
        pg_end = common.read_cpu([pg])
    finally:
        timer.restore()
        engine.dispose()
    return {
        "documents": len(ids) - warm,
        "pages": pages,
        "total ms/page": {k: 1000 * v / pages for k, v in totals.items()},
        "steps ms/page": {
            stage: {k: 1000 * v / pages for k, v in sorted(b.items(), key=lambda kv: -kv[1])}
            for stage, b in steps.items()
        },
        "postgres backend ms/page": 1000 * common.cpu_delta(pg_start, pg_end)["postgres"] / pages,
    }


def report(figures: dict[str, Any], kind: str) -> None:
    print()
    print(
        f"## stages: CPU per page, in-process ({figures['documents']} {kind}, "
        f"{figures['pages']} pages, {common.cores()} cores)"
    )
    for stage in ("prepare", "extract"):
        print()
        total = figures["total ms/page"][stage]
        print(f"### {stage}: {total:.1f} ms CPU per page")
        print()
        rows = [
            [label, value, 100 * value / total]
            for label, value in figures["steps ms/page"][stage].items()
            if value >= 0.05
        ]
        print(common.table(["step", "ms/page", "%"], rows))
    both = sum(figures["total ms/page"].values())
    print()
    print(
        f"both stages: {both:.1f} ms/page in the worker process; Postgres backends "
        f"{figures['postgres backend ms/page']:.1f} ms/page"
    )


if __name__ == "__main__":
    raise SystemExit(main())
