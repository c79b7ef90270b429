"""`python -m bench.dashboard`: the dashboard and the ops_* views on a big database.

Seeds its own database (`pagemill_bench_dashboard`, dropped and created) server-side with
generate_series: by default 1,000,000 documents spread over the last 90 days (a backlog of
pending and processing ones in the last hour, some stuck), 5 state-change events per document,
5,000,000 provider-call rows, an extraction per finished document and a dead letter per failed
one. Then `pagemill web` is started on it and timed over HTTP:

* the overview (`/`) and the document list with each filter, p50/p95 of N requests each;
* each ops_* view, `SELECT *` (and the cost view as the overview reads it), median of 5.

    python -m bench.dashboard [--docs 1000000] [--calls-per-doc 5] [--days 90] [--requests 40]
                              [--keep] [--reuse]

Times are wall-clock on a shared machine: the load average at the start is printed with them.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench.common import fmt, log, percentile, reproduce_line, table, write_results

DEFAULT_SERVER = "postgresql+psycopg://postgres@127.0.0.1:5432/pagemill"
BENCH_DB = "pagemill_bench_dashboard"

VIEWS = [
    "ops_throughput_hourly",
    "ops_stage_latency",
    "ops_stage_latency_hourly",
    "ops_failures_hourly",
    "ops_dead_letters",
    "ops_backlog",
    "ops_stuck",
    "ops_cost_daily",
]

# A deterministic fraction in [0, 1) per row and salt: reproducible seeds without random().
FRAC = "(((hashint8(({col}) * 1000 + {salt}) & 2147483647) % 1000000) / 1000000.0)"


def frac(col: str, salt: int) -> str:
    return FRAC.format(col=col, salt=salt)


def seed_statements(docs: int, calls_per_doc: int, days: int) -> list[tuple[str, str]]:
    """(what, SQL) in order. Final documents are spread evenly over `days`, oldest first; the
    newest 2,000 are the backlog (pending, processing, a few stuck)."""
    backlog = min(2000, docs // 10)
    r = frac("g", 1)
    status = f"""CASE WHEN g > {docs - backlog} THEN
                      (CASE WHEN g % 10 = 0 THEN 'processing' ELSE 'pending' END)
                 WHEN {r} < 0.02 THEN 'failed' WHEN {r} < 0.07 THEN 'needs_review'
                 ELSE 'done' END"""
    return [
        (
            "documents",
            f"""
            INSERT INTO documents (bucket, key, version, size, sha256, content_type, schema_name,
                                   provider, status, stage, page_count, attempts, created_at,
                                   updated_at, finished_at, error_category, error_message,
                                   lease_until, lease_owner)
            SELECT 'bucket-' || (g % 3),
                   'in/' || to_char(t, 'YYYY/MM/DD') || '/scan-' || g || '.pdf',
                   md5(g::text), 20000 + g % 400000, md5(g::text || 's'), 'application/pdf',
                   CASE WHEN g % 7 = 0 THEN 'receipt' ELSE 'invoice' END,
                   CASE WHEN g % 10 = 0 THEN 'openai_compat' ELSE 'anthropic' END,
                   st,
                   CASE WHEN st IN ('pending', 'processing') AND g % 3 = 0 THEN 'prepare'
                        ELSE 'extract' END,
                   1 + (g % 5), 2, t,
                   CASE WHEN st = 'pending' AND g % 97 = 0 THEN t - interval '2 hours'
                        ELSE t + interval '30 seconds' END,
                   CASE WHEN st IN ('done', 'needs_review', 'failed')
                        THEN t + (3 + 60 * {frac("g", 2)}) * interval '1 second' END,
                   CASE WHEN st = 'failed' THEN (ARRAY['bad_input', 'encrypted', 'too_large',
                        'provider_rejected', 'invalid_output'])[1 + g % 5] END,
                   CASE WHEN st = 'failed' THEN 'seeded failure ' || g END,
                   CASE WHEN st = 'processing' THEN
                        now() + CASE WHEN g % 50 = 0 THEN interval '-5 minutes'
                                     ELSE interval '10 minutes' END END,
                   CASE WHEN st = 'processing' THEN 'task-' || g END
              FROM (SELECT g,
                           CASE WHEN g > {docs - backlog}
                                THEN now() - interval '20 minutes' * ({docs} - g) / {backlog}
                                ELSE now() - interval '1 hour' - ({days} * interval '1 day')
                                     * (1 - g::float8 / {docs - backlog}) END AS t,
                           {status} AS st
                      FROM generate_series(1, {docs}) g) s
        """,
        ),
        # Five changes per finished document: registered, claimed for prepare, handed to
        # extract, claimed for extract, final; a failed one carries its error on the last.
        (
            "document_events",
            f"""
            INSERT INTO document_events (document_id, stage, from_stage, from_status, to_status,
                                         attempt, worker, error_category, error_message,
                                         duration_s, created_at)
            SELECT d.id, e.stage, e.from_stage, e.from_status, e.to_status, e.attempt,
                   CASE WHEN e.n > 1 THEN 'task-' || d.id END,
                   CASE WHEN e.n = 5 THEN d.error_category END,
                   CASE WHEN e.n = 5 THEN d.error_message END,
                   e.duration_s, d.created_at + e.at_s * interval '1 second'
              FROM documents d
             CROSS JOIN LATERAL (
                SELECT 0.05 + 2 * {frac("d.id", 3)} AS q1, 0.3 + 3 * {frac("d.id", 4)} AS prep,
                       0.05 + 5 * {frac("d.id", 5)} AS q2, 2 + 40 * {frac("d.id", 6)} AS ext) r
             CROSS JOIN LATERAL (VALUES
                (1, 'prepare', NULL, NULL, 'pending', 0, NULL::float8, 0.0::float8),
                (2, 'prepare', 'prepare', 'pending', 'processing', 1, r.q1, r.q1),
                (3, 'extract', 'prepare', 'processing', 'pending', 1, r.prep, r.q1 + r.prep),
                (4, 'extract', 'extract', 'pending', 'processing', 2, r.q2,
                    r.q1 + r.prep + r.q2),
                (5, 'extract', 'extract', 'processing', d.status, 2, r.ext,
                    r.q1 + r.prep + r.q2 + r.ext)
             ) AS e(n, stage, from_stage, from_status, to_status, attempt, duration_s, at_s)
             WHERE d.status IN ('done', 'needs_review', 'failed') OR e.n = 1
        """,
        ),
        (
            "vlm_calls",
            f"""
            INSERT INTO vlm_calls (call_id, document_id, provider, model, request_id, attempt,
                                   page_indexes, input_tokens, output_tokens,
                                   cache_creation_input_tokens, cache_read_input_tokens,
                                   cost_usd, latency_ms, outcome, created_at)
            SELECT gen_random_uuid(), d.id, d.provider,
                   CASE WHEN d.provider = 'openai_compat' THEN 'Qwen/Qwen2.5-VL-7B-Instruct'
                        WHEN d.id % 4 = 0 THEN 'claude-haiku-4-5' ELSE 'claude-sonnet-4-6' END,
                   'req-' || d.id || '-' || c, c, ARRAY[c - 1],
                   1200 + (d.id % 900), 300 + (d.id % 200), 0, CASE WHEN c > 1 THEN 900 ELSE 0 END,
                   CASE WHEN d.provider = 'openai_compat' THEN NULL
                        ELSE ((1200 + (d.id % 900)) * 3 + (300 + (d.id % 200)) * 15)
                             / 1000000.0 END,
                   (800 + 6000 * {frac("d.id * 10 + c", 7)})::int,
                   CASE WHEN {frac("d.id * 10 + c", 8)} < 0.03 THEN 'error' ELSE 'ok' END,
                   d.created_at + (5 + c * 4) * interval '1 second'
              FROM documents d
             CROSS JOIN generate_series(1, {calls_per_doc}) c
        """,
        ),
        (
            "extractions",
            """
            INSERT INTO extractions (document_id, schema_name, schema_version, provider, model,
                                     valid, data, grounding, review_reasons)
            SELECT d.id, d.schema_name, '1', d.provider, 'claude-sonnet-4-6', true,
                   jsonb_build_object('invoice_number', 'INV-' || d.id,
                                      'total', ((d.id % 100000) / 100.0)::text,
                                      'currency', 'EUR', 'vendor_name', 'Vendor ' || (d.id % 500)),
                   '{}'::jsonb,
                   CASE WHEN d.status = 'needs_review'
                        THEN '["ungrounded: total was not found on any page"]'::jsonb
                        ELSE '[]'::jsonb END
              FROM documents d
             WHERE d.status IN ('done', 'needs_review')
        """,
        ),
        (
            "dead_letters",
            """
            INSERT INTO dead_letters (document_id, task_name, error_category, error_message,
                                      attempts, created_at, replayed_at, replay_count)
            SELECT d.id, 'extract', d.error_category, d.error_message, 2, d.finished_at,
                   CASE WHEN d.finished_at < now() - interval '7 days'
                        THEN d.finished_at + interval '1 day' END,
                   CASE WHEN d.finished_at < now() - interval '7 days' THEN 1 ELSE 0 END
              FROM documents d
             WHERE d.status = 'failed'
        """,
        ),
    ]


def database_url(server_url: str) -> str:
    return make_url(server_url).set(database=BENCH_DB).render_as_string(hide_password=False)


def seed(server_url: str, docs: int, calls_per_doc: int, days: int) -> dict[str, float]:
    from pipeline.db.migrate import upgrade

    admin = create_engine(
        make_url(server_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        conn.execute(text(f'CREATE DATABASE "{BENCH_DB}"'))
    admin.dispose()
    url = database_url(server_url)
    upgrade(url)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    seconds: dict[str, float] = {}
    with engine.connect() as conn:
        # The trigger would write one event per seeded row; the events are seeded directly.
        conn.execute(text("ALTER TABLE documents DISABLE TRIGGER USER"))
        for what, sql in seed_statements(docs, calls_per_doc, days):
            log(f"seeding {what}")
            started = time.perf_counter()
            conn.execute(text(sql))
            seconds[what] = time.perf_counter() - started
        conn.execute(text("ALTER TABLE documents ENABLE TRIGGER USER"))
        log("vacuum analyze")
        started = time.perf_counter()
        conn.execute(text("VACUUM ANALYZE"))
        seconds["vacuum_analyze"] = time.perf_counter() - started
    engine.dispose()
    return seconds


def counts(url: str) -> dict[str, int]:
    engine = create_engine(url)
    with engine.connect() as conn:
        out = {
            table_name: int(conn.execute(text(f"SELECT count(*) FROM {table_name}")).scalar_one())
            for table_name in (
                "documents",
                "document_events",
                "vlm_calls",
                "extractions",
                "dead_letters",
            )
        }
    engine.dispose()
    return out


def time_views(url: str, repeat: int = 5) -> list[dict[str, Any]]:
    queries = [(view, f"SELECT * FROM {view}") for view in VIEWS] + [
        (
            "ops_cost_daily (this month, as the overview)",
            "SELECT * FROM ops_cost_daily WHERE day >= date_trunc('month', now() AT TIME ZONE"
            " 'UTC') AT TIME ZONE 'UTC'",
        ),
        (
            "ops_cost_daily (last 31 days)",
            "SELECT * FROM ops_cost_daily WHERE day >= now() - interval '31 days'",
        ),
        (
            "ops_throughput_hourly (last 24 h, as the overview)",
            "SELECT * FROM ops_throughput_hourly WHERE hour > now() - interval '24 hours'",
        ),
    ]
    engine = create_engine(url)
    results = []
    with engine.connect() as conn:
        for name, sql in queries:
            times, rows = [], 0
            for _ in range(repeat):
                started = time.perf_counter()
                rows = len(conn.execute(text(sql)).all())
                times.append((time.perf_counter() - started) * 1000)
            results.append(
                {
                    "query": name,
                    "rows": rows,
                    "median_ms": statistics.median(times),
                    "max_ms": max(times),
                }
            )
            log(f"{name}: {statistics.median(times):.1f} ms")
    engine.dispose()
    return results


def run_rollup(url: str) -> dict[str, float]:
    """The roll-up as the beat runs it: the first run catches up on all history; the next one
    (what runs every few minutes) finds only the minutes since."""
    from pipeline.db.session import make_engine, make_session_factory
    from pipeline.settings import get_settings
    from pipeline.usecases.rollup import margins_for, roll_up

    settings = get_settings()
    engine = make_engine(url, pool_size=1)
    sessions = make_session_factory(engine)
    margins = margins_for(settings.task_time_limit_s, settings.retry_cap_s)
    out: dict[str, float] = {}
    for name in ("catch_up", "next"):
        started = time.perf_counter()
        run = roll_up(sessions, margins=margins)
        out[f"{name}_s"] = time.perf_counter() - started
        out[f"{name}_chunks"] = run.chunks if run else 0
        log(f"roll-up ({name}): {out[f'{name}_s']:.1f} s, {out[f'{name}_chunks']:.0f} chunk(s)")
    engine.dispose()
    return out


def sample_values(url: str) -> dict[str, Any]:
    engine = create_engine(url)
    with engine.connect() as conn:
        newest = conn.execute(text("SELECT max(id) FROM documents")).scalar_one()
        day = conn.execute(
            text(
                "SELECT to_char(created_at, 'YYYY/MM/DD'), created_at::date FROM documents"
                " WHERE id = :id"
            ),
            {"id": newest // 2},
        ).one()
        failed = conn.execute(
            text("SELECT id FROM documents WHERE status = 'failed' ORDER BY id DESC LIMIT 1")
        ).scalar_one()
    engine.dispose()
    return {
        "newest": newest,
        "middle": newest // 2,
        "day_path": day[0],
        "day": day[1],
        "failed": failed,
    }


def time_requests(base: str, paths: list[tuple[str, str]], n: int) -> list[dict[str, Any]]:
    results = []
    for name, path in paths:
        for _ in range(2):  # warm-up: connections, plans, template compilation
            urllib.request.urlopen(base + path, timeout=60).read()
        times = []
        for _ in range(n):
            started = time.perf_counter()
            with urllib.request.urlopen(base + path, timeout=60) as response:
                response.read()
                assert response.status == 200
            times.append((time.perf_counter() - started) * 1000)
        results.append(
            {
                "page": name,
                "path": path,
                "p50_ms": percentile(times, 50),
                "p95_ms": percentile(times, 95),
                "max_ms": max(times),
                "requests": n,
            }
        )
        log(f"{name}: p50 {percentile(times, 50):.0f} ms, p95 {percentile(times, 95):.0f} ms")
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.dashboard",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--docs", type=int, default=1_000_000)
    parser.add_argument("--calls-per-doc", type=int, default=5)
    parser.add_argument("--days", type=int, default=90)
    parser.add_argument("--requests", type=int, default=40, help="timed requests per page")
    parser.add_argument("--reuse", action="store_true", help="time the database already seeded")
    parser.add_argument("--keep", action="store_true", help="keep the database afterwards")
    args = parser.parse_args(argv)

    from workers import devstack

    server = os.environ.get("PAGEMILL_DATABASE_URL", DEFAULT_SERVER)
    url = database_url(server)
    load = os.getloadavg()
    seeded: dict[str, float] = {}
    if not args.reuse:
        seeded = seed(server, args.docs, args.calls_per_doc, args.days)
    sizes = counts(url)
    log(f"rows: {sizes}")
    rollup = run_rollup(url)
    views = time_views(url)
    values = sample_values(url)

    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    log_dir = Path(os.environ.get("TMPDIR", "/tmp")) / f"pagemill-bench-dashboard-{port}"
    web = devstack.spawn(
        "web",
        ["web", "--port", str(port)],
        {"PAGEMILL_DATABASE_URL": url, "PAGEMILL_WEB_REFRESH_S": "0"},
        log_dir,
    )
    base = f"http://127.0.0.1:{port}"
    try:

        def up() -> bool:
            try:
                return bool(urllib.request.urlopen(base + "/readyz", timeout=2).status == 200)
            except OSError:
                return False

        if not devstack.wait_for(up, 90):
            print(web.tail(), file=sys.stderr)
            return 1
        q = urllib.parse.quote
        pages = [
            ("overview", "/"),
            ("overview, 7 days", "/?hours=168"),
            ("documents", "/documents"),
            ("documents, status=failed", "/documents?status=failed"),
            ("documents, schema=receipt", "/documents?schema=receipt"),
            ("documents, search invoice number", f"/documents?q=INV-{values['middle']}"),
            ("documents, search key prefix", f"/documents?q={q('in/' + values['day_path'])}"),
            (
                "documents, bucket + prefix",
                f"/documents?bucket=bucket-1&prefix={q('in/' + values['day_path'])}",
            ),
            ("documents, one day", f"/documents?since={values['day']}&until={values['day']}"),
            ("documents, older page", f"/documents?before={values['middle']}"),
            ("document page", f"/documents/{values['failed']}"),
        ]
        requests = time_requests(base, pages, args.requests)
    finally:
        web.stop()

    print()
    print(
        f"dashboard benchmark: {sizes['documents']:,} documents, {sizes['vlm_calls']:,} calls,"
        f" {sizes['document_events']:,} events; load average at start "
        f"{load[0]:.2f} {load[1]:.2f} {load[2]:.2f} (2 cores)"
    )
    if seeded:
        print("seeding (s): " + ", ".join(f"{k} {v:.0f}" for k, v in seeded.items()))
    print(
        f"roll-up: first run (all history) {rollup['catch_up_s']:.1f} s in "
        f"{rollup['catch_up_chunks']:.0f} chunks; the next run {rollup['next_s']:.2f} s"
    )
    print()
    print(
        table(
            ["page", "p50 ms", "p95 ms", "max ms"],
            [[r["page"], r["p50_ms"], r["p95_ms"], r["max_ms"]] for r in requests],
        )
    )
    print()
    print(
        table(
            ["query", "rows", "median ms", "max ms"],
            [[r["query"], r["rows"], r["median_ms"], r["max_ms"]] for r in views],
        )
    )
    overview = next(r for r in requests if r["page"] == "overview")
    verdict = "met" if overview["p95_ms"] <= 300 else "NOT met"
    print(f"\noverview p95 {fmt(overview['p95_ms'], 0)} ms: target 300 ms {verdict}")
    path = write_results(
        "dashboard",
        {
            "args": vars(args),
            "rows": sizes,
            "seed_s": seeded,
            "rollup": rollup,
            "load": load,
            "requests": requests,
            "views": views,
        },
    )
    print(f"results: {path}")
    print(reproduce_line("bench.dashboard", argv if argv is not None else sys.argv[1:]))
    if not args.keep:
        admin = create_engine(
            make_url(server).set(database="postgres"), isolation_level="AUTOCOMMIT"
        )
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{BENCH_DB}" WITH (FORCE)'))
        admin.dispose()
    return 0


if __name__ == "__main__":
    sys.exit(main())
