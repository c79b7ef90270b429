"""What a realistic workload costs per 1,000 pages: naive vs each saving alone vs all together.

    python -m bench.cost                 # 100 uploads, a few minutes on 2 cores
    python -m bench.cost --docs 40       # quicker

The workload: one-page invoices and receipts (60 / 40), a share of them uploaded twice (the
same bytes under another key, as users do), a share under `archive/` (not urgent: batch
eligible), and a fake provider with realistic token counts (each request's images by
Anthropic's rule after its downscaling, its text and schema; answers by their JSON length)
whose cheap model misreads the total of some pages (rules and grounding catch it) and whose
strong model misreads a few (those end in review whatever the set-up).

Each set-up runs the real use cases (`prepare_document`, `extract_document`, the batch runner)
against a fresh Postgres database and the same uploads:

* naive: every page to the strong model, no page cache, no prompt caching, no batch;
* each saving alone: page cache / cascade (cheap model first) / batch for archive/ /
  prompt caching where it pays;
* all together.

It prints cost per 1,000 pages with the share of documents ending `done` beside it, and ends
with `cost ratio: X.XX (all savings vs naive)`.
"""

from __future__ import annotations

import argparse
import dataclasses
import io
import logging
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bench import common
from bench.common import log

DATABASE = "pagemill_bench_cost"
CHEAP, STRONG = "claude-haiku-4-5", "claude-sonnet-4-6"
_CENT = Decimal("0.01")


# --- the workload ---------------------------------------------------------------------------


@dataclass(slots=True)
class Doc:
    key: str
    schema: str
    body: bytes
    answer: dict[str, Any]
    ident: str  # printed on the page: how the fake provider knows which document it reads
    cheap_misreads: bool = False
    strong_misreads: bool = False


def _receipt(seed: int) -> tuple[bytes, dict[str, Any], str]:
    import pymupdf

    rng = random.Random(seed)
    merchants = [
        ("Corner Bakery", "Market Street 4, 10115 Berlin"),
        ("Green Grocer", "Rue de Lyon 12, 75012 Paris"),
        ("City Pharmacy", "Via Roma 8, 20121 Milano"),
    ]
    goods = [
        "Bread",
        "Milk 1l",
        "Coffee beans",
        "Apples 1kg",
        "Cheese",
        "Water 6x1.5l",
        "Pasta",
        "Olive oil",
        "Tomatoes",
        "Butter",
        "Eggs x10",
        "Tea",
    ]
    name, address = merchants[seed % len(merchants)]
    number = f"R-{seed:06d}"
    day = date(2026, 1, 1) + timedelta(days=rng.randrange(300))
    clock = f"{8 + rng.randrange(12):02d}:{rng.randrange(60):02d}"
    items = []
    for n in range(2 + seed % 6):
        qty = Decimal(rng.randint(1, 4))
        unit = (Decimal(rng.randint(50, 2500)) / 100).quantize(_CENT)
        items.append(
            {
                "description": goods[(seed + n) % len(goods)],
                "quantity": str(qty),
                "unit_price": str(unit),
                "amount": str((qty * unit).quantize(_CENT)),
            }
        )
    subtotal = sum((Decimal(i["amount"]) for i in items), Decimal(0))
    tax = (subtotal * Decimal("0.07")).quantize(_CENT, ROUND_HALF_UP)
    total = subtotal + tax
    doc = pymupdf.open()
    page = doc.new_page(width=226, height=200 + 16 * len(items))
    y = 24.0
    for text_, size in (
        (name, 12),
        (address, 7),
        (f"Receipt {number}", 8),
        (f"{day.isoformat()} {clock}", 8),
    ):
        page.insert_text((12, y), text_, fontsize=size)
        y += size + 6
    y += 6
    for item in items:
        page.insert_text((12, y), f"{item['description']}", fontsize=8)
        page.insert_text((120, y), f"{item['quantity']} x {item['unit_price']}", fontsize=8)
        page.insert_text((180, y), item["amount"], fontsize=8)
        y += 14
    for label, value in (("Subtotal", subtotal), ("Tax 7%", tax), ("Total EUR", total)):
        page.insert_text((100, y + 6), label, fontsize=8)
        page.insert_text((180, y + 6), f"{value:.2f}", fontsize=8)
        y += 14
    page.insert_text((12, y + 14), "Paid by card", fontsize=8)
    body: bytes = doc.tobytes(garbage=3, deflate=True)
    doc.close()
    answer = {
        "merchant_name": name,
        "merchant_address": address,
        "receipt_number": number,
        # No time: grounding does not look times up yet (a receipt would go to review for it).
        "date": day.isoformat(),
        "time": None,
        "currency": "EUR",
        "subtotal": f"{subtotal:.2f}",
        "tax": f"{tax:.2f}",
        "tip": None,
        "total": f"{total:.2f}",
        "payment_method": "card",
        "line_items": items,
    }
    return body, answer, number


def workload(
    docs: int,
    *,
    seed: int = 7,
    reupload: float = 0.2,
    archive: float = 0.5,
    cheap_misread: float = 0.15,
    strong_misread: float = 0.03,
) -> list[Doc]:
    """`docs` uploads; `reupload` of them repeat an earlier one's bytes under a new key."""
    from pipeline.synthetic import make_invoice, render_pdf

    rng = random.Random(seed)
    originals: list[Doc] = []
    uploads: list[Doc] = []
    for n in range(docs):
        folder = "archive" if rng.random() < archive else "inbox"
        if originals and rng.random() < reupload:
            source = rng.choice(originals)
            uploads.append(dataclasses.replace(source, key=f"{folder}/again-{n}.pdf"))
            continue
        if rng.random() < 0.6:
            invoice = make_invoice(1000 + n, items=3 + n % 8)
            doc = Doc(
                f"{folder}/invoice-{n}.pdf",
                "invoice",
                render_pdf(invoice),
                invoice.expected(),
                invoice.invoice_number,
            )
        else:
            body, answer, ident = _receipt(2000 + n)
            doc = Doc(f"{folder}/receipt-{n}.pdf", "receipt", body, answer, ident)
        doc.cheap_misreads = rng.random() < cheap_misread
        doc.strong_misreads = rng.random() < strong_misread
        originals.append(doc)
        uploads.append(doc)
    return uploads


def responder(docs: Sequence[Doc]) -> Any:
    """Answers each request with its document's fields, misread by the models that misread it.
    A re-check shows tiles without the text layer; its feedback quotes the failing totals."""
    from tests.support.fake_model_server import RecordedRequest, Scripted, reply

    by_ident = {d.ident: d for d in docs}
    by_total = {_wrong_total(d): d for d in docs}

    def answer(request: RecordedRequest) -> Scripted | None:
        text_ = request.prompt_text()
        doc = next((d for ident, d in by_ident.items() if ident in text_), None)
        if doc is None:
            doc = next((d for total, d in by_total.items() if f"total is {total}" in text_), None)
        if doc is None:
            return None
        fields = dict(doc.answer)
        model = request.model or ""
        if (doc.cheap_misreads and model.startswith(CHEAP)) or doc.strong_misreads:
            fields["total"] = _wrong_total(doc)
        return reply(fields=fields)

    return answer


def _wrong_total(doc: Doc) -> str:
    return f"{Decimal(doc.answer['total']) + Decimal('9.00'):.2f}"


# --- one set-up -----------------------------------------------------------------------------


SETUPS: dict[str, dict[str, Any]] = {
    "naive": {},
    "page cache": {"page_cache": True},
    "cascade": {"cascade": f"*={CHEAP}>{STRONG}"},
    "batch (archive/)": {"batch_routes": "archive/"},
    "prompt caching": {"prompt_cache": True},
    "all together": {
        "page_cache": True,
        "cascade": f"*={CHEAP}>{STRONG}",
        "batch_routes": "archive/",
        "prompt_cache": True,
    },
}
_OFF = {"page_cache": False, "cascade": "", "batch_routes": "", "prompt_cache": False}


@dataclass
class Outcome:
    name: str
    documents: int = 0
    pages: int = 0
    done: int = 0
    review: int = 0
    other: int = 0
    calls: int = 0
    cost: Decimal = Decimal(0)
    saved: dict[str, Decimal] = field(default_factory=dict)
    escalated: int = 0
    cache_hits: int = 0
    batch_calls: int = 0
    estimated: Decimal = Decimal(0)  # what the answered calls were estimated to cost
    answered: Decimal = Decimal(0)  # what they cost
    seconds: float = 0.0

    @property
    def per_1000_pages(self) -> Decimal:
        return self.cost * 1000 / max(self.pages, 1)

    @property
    def done_rate(self) -> float:
        return self.done / max(self.documents, 1)


def run_setup(
    name: str, docs: Sequence[Doc], database_url: str, endpoint: str, server: Any, bucket: str
) -> Outcome:
    from sqlalchemy import text

    from bench.throughput import reset_database
    from pipeline.cost.batch import BatchRunner
    from pipeline.cost.control import CostServices
    from pipeline.cost.waiting import wake_documents
    from pipeline.costing import load_price_table
    from pipeline.db import repository as repo
    from pipeline.db.models import Document
    from pipeline.db.session import make_engine, make_session_factory, transaction
    from pipeline.domain import DocumentStatus, ObjectRef
    from pipeline.extractors import build_extractor
    from pipeline.extractors.base import Extractor
    from pipeline.settings import load_settings
    from pipeline.storage import make_s3_client
    from pipeline.usecases.process import Collaborators, extract_document, prepare_document

    reset_database(database_url)
    server.reset()
    server.responder = responder(docs)
    server.cache_min_tokens = {STRONG: 1024, CHEAP: 4096, "claude-opus": 4096}
    settings = load_settings(
        database_url=database_url,
        s3_endpoint_url=endpoint,
        s3_access_key_id="test",
        s3_secret_access_key="test",
        anthropic_api_key="sk-bench",
        anthropic_base_url=server.anthropic_base_url,
        anthropic_model=STRONG,
        batch_min_requests=1,
        **{**_OFF, **SETUPS[name]},
    )
    engine = make_engine(database_url, pool_size=4)
    sessions = make_session_factory(engine)
    prices = load_price_table()
    extractors: dict[str, Extractor] = {}

    def extractor_for(provider: str) -> Extractor:
        if provider not in extractors:
            extractors[provider] = build_extractor(settings, provider)
        return extractors[provider]

    deps = Collaborators(
        sessions=sessions,
        s3=make_s3_client(settings),
        extractor_for=extractor_for,
        prices=prices,
        settings=settings,
        cost=CostServices(settings, prices, sessions),
    )
    due: list[int] = []
    runner = BatchRunner(
        sessions=sessions,
        extractor_for=extractor_for,
        prices=prices,
        wake=lambda ids: wake_documents(sessions, ids, lambda i, _s: due.append(i)),
        min_requests=1,
        max_wait_s=0,
    )
    started = time.perf_counter()
    ids = []
    for doc in docs:
        version = common_version(doc)
        with transaction(sessions) as session:
            doc_id, _ = repo.register_document(
                session, ObjectRef(bucket, doc.key, version), doc.schema, "anthropic"
            )
        ids.append(doc_id)
        if prepare_document(deps, doc_id) is not None:
            extract_document(deps, doc_id)
    for _ in range(10):  # batch cycles: submit, collect, resume the documents answered
        report = runner.run_once()
        if not due and not report.submitted and not report.retried:
            break
        while due:
            extract_document(deps, due.pop(0))
    elapsed = time.perf_counter() - started

    outcome = Outcome(name=name, seconds=elapsed)
    with sessions() as session:
        for status, count, pages in session.execute(
            text(
                "SELECT status, count(*), coalesce(sum(page_count), 0)"
                " FROM documents GROUP BY status"
            )
        ):
            outcome.documents += count
            outcome.pages += pages
            if status == DocumentStatus.DONE.value:
                outcome.done += count
            elif status == DocumentStatus.NEEDS_REVIEW.value:
                outcome.review += count
            else:
                outcome.other += count
        row = session.execute(
            text(
                "SELECT coalesce(sum(cost_usd), 0) AS cost,"
                " count(*) FILTER (WHERE purpose <> 'cache_hit') AS calls,"
                " sum(saved_page_cache_usd) AS cache, sum(saved_cascade_usd) AS cascade,"
                " sum(saved_batch_usd) AS batch, sum(saved_prompt_cache_usd) AS prompt,"
                " count(*) FILTER (WHERE purpose = 'escalate') AS escalated,"
                " count(*) FILTER (WHERE purpose = 'cache_hit') AS hits,"
                " count(*) FILTER (WHERE service_tier = 'batch') AS batch_calls,"
                " coalesce(sum(estimated_cost_usd) FILTER (WHERE estimated_cost_usd IS NOT NULL"
                "   AND outcome <> 'error' AND purpose <> 'cache_hit'), 0) AS estimated,"
                " coalesce(sum(cost_usd) FILTER (WHERE estimated_cost_usd IS NOT NULL"
                "   AND outcome <> 'error' AND purpose <> 'cache_hit'), 0) AS answered"
                " FROM vlm_calls"
            )
        ).one()
        outcome.estimated, outcome.answered = Decimal(row.estimated), Decimal(row.answered)
        outcome.cost, outcome.calls = Decimal(row.cost), row.calls
        outcome.saved = {
            k: Decimal(getattr(row, k) or 0) for k in ("cache", "cascade", "batch", "prompt")
        }
        outcome.escalated, outcome.cache_hits, outcome.batch_calls = (
            row.escalated,
            row.hits,
            row.batch_calls,
        )
        assert session.query(Document).count() == len(docs)
    engine.dispose()
    return outcome


def common_version(doc: Doc) -> str:
    import hashlib

    return hashlib.md5(doc.body).hexdigest()


# --- main -----------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.cost",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=100, help="uploads in the workload")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--database-url", default=None)
    parser.add_argument(
        "--setups", default=",".join(SETUPS), help="comma-separated subset of: " + ", ".join(SETUPS)
    )
    args = parser.parse_args(argv)
    argv_list = list(argv if argv is not None else sys.argv[1:])
    names = [n.strip() for n in args.setups.split(",") if n.strip()]
    unknown = [n for n in names if n not in SETUPS]
    if unknown or "naive" not in names:
        parser.error(f"unknown set-up(s) {unknown}" if unknown else "naive is the baseline")

    from sqlalchemy.engine import make_url

    from bench.fakeaws import make_server
    from pipeline.settings import load_settings
    from pipeline.storage import make_s3_client
    from tests.support.fake_model_server import FakeModelServer

    logging.disable(logging.WARNING)
    base = load_settings()
    database_url = args.database_url or make_url(base.database_url).set(
        database=DATABASE
    ).render_as_string(hide_password=False)
    docs = workload(args.docs, seed=args.seed)
    aws = make_server()
    threading.Thread(target=aws.serve_forever, daemon=True).start()
    endpoint = f"http://127.0.0.1:{aws.server_address[1]}"
    server = FakeModelServer().start()
    results: list[Outcome] = []
    try:
        s3 = make_s3_client(
            load_settings(
                s3_endpoint_url=endpoint, s3_access_key_id="test", s3_secret_access_key="test"
            )
        )
        bucket = "bench-cost"
        s3.create_bucket(Bucket=bucket)
        for doc in docs:
            s3.put_object(Bucket=bucket, Key=doc.key, Body=io.BytesIO(doc.body).read())
        for name in names:
            log(f"set-up: {name}")
            results.append(run_setup(name, docs, database_url, endpoint, server, bucket))
    finally:
        server.stop()
        aws.shutdown()

    originals = len({d.ident for d in docs})
    print()
    print(
        f"cost benchmark: {len(docs)} uploads ({sum(d.schema == 'invoice' for d in docs)} "
        f"invoices, {sum(d.schema == 'receipt' for d in docs)} receipts; "
        f"{len(docs) - originals} re-uploads; "
        f"{sum(d.key.startswith('archive/') for d in docs)} under archive/), "
        f"{results[0].pages} pages; fake provider, Anthropic list prices "
        f"(strong {STRONG}, cheap {CHEAP})"
    )
    header = (
        f"{'set-up':<18} {'$/1,000 pages':>14} {'vs naive':>9} {'done':>7} {'review':>7}"
        f" {'calls':>6} {'escalated':>9} {'cache hits':>10} {'batch calls':>11}"
        f" {'saved $ (cache/cascade/batch/prompt)':>38} {'est/actual':>10}"
    )
    print(header)
    print("-" * len(header))
    naive = results[0].per_1000_pages
    for r in results:
        ratio = r.per_1000_pages / naive if naive else Decimal(0)
        print(
            f"{r.name:<18} {r.per_1000_pages:>14.4f} {ratio:>9.2f} {r.done_rate:>7.1%}"
            f" {r.review:>7} {r.calls:>6} {r.escalated:>9} {r.cache_hits:>10}"
            f" {r.batch_calls:>11} {' / '.join(f'{v:.4f}' for v in r.saved.values()):>38}"
            f" {r.estimated / r.answered if r.answered else Decimal(0):>10.2f}"
        )
    final = next((r for r in results if r.name == "all together"), None)
    common.write_results(
        "cost",
        {
            "setups": [
                dataclasses.asdict(r)
                | {"per_1000_pages": str(r.per_1000_pages), "done_rate": r.done_rate}
                for r in results
            ]
        },
    )
    print(common.reproduce_line("bench.cost", argv_list))
    if final is not None:
        print(f"cost ratio: {final.per_1000_pages / naive:.2f} (all savings vs naive)")
    failed = [r.name for r in results if r.other]
    if failed:
        print(f"documents neither done nor in review in: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
