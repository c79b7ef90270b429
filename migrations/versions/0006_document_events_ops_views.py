"""Every state change is a row (document_events, written by a trigger), review corrections, and
the ops_* views the dashboard, Grafana and `pagemill status` read.

Column names of document_events and of the ops_* views are a contract with the Grafana panels
and `pagemill status`: add columns, never rename or drop them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04 14:30:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

FINAL = "('done', 'needs_review', 'failed')"


def utc_trunc(unit: str, column: str) -> str:
    """date_trunc in UTC, immutable (unlike date_trunc on timestamptz), so it can be indexed and
    a filter on the view's hour/day column reaches the index."""
    return f"(date_trunc('{unit}', ({column}) AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


def hour(column: str) -> str:
    return utc_trunc("hour", column)


def day(column: str) -> str:
    return utc_trunc("day", column)


# One row per state change. Written by a trigger on documents, so no code path can forget it,
# in the same transaction as the change. `stage`/`to_status` say where the document is now,
# `from_stage`/`from_status` where it was; `duration_s` is how long it was there (seconds since
# the document's previous event). `worker` is the lease owner (the task id) that made the change,
# or the actor a session named with `SET LOCAL pagemill.actor` (a reviewer, a replay).
# The error columns are set on the change that ended an attempt with an error (a retry, a
# failure), not on a later claim that still carries that error.
EVENT_FUNCTION = """
CREATE FUNCTION pagemill_document_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    previous timestamptz;
    errored boolean;
    actor text := nullif(current_setting('pagemill.actor', true), '');
BEGIN
    IF TG_OP = 'INSERT' THEN
        INSERT INTO document_events (document_id, stage, to_status, attempt, worker,
                                     error_category, error_message)
        VALUES (NEW.id, NEW.stage, NEW.status, NEW.attempts, coalesce(NEW.lease_owner, actor),
                NEW.error_category, NEW.error_message);
        RETURN NULL;
    END IF;
    SELECT e.created_at INTO previous
      FROM document_events e
     WHERE e.document_id = NEW.id
     ORDER BY e.id DESC
     LIMIT 1;
    errored := NEW.error_category IS NOT NULL AND NEW.status <> 'processing' AND (
        OLD.status = 'processing' OR NEW.status = 'failed'
        OR NEW.error_category IS DISTINCT FROM OLD.error_category
        OR NEW.error_message IS DISTINCT FROM OLD.error_message);
    INSERT INTO document_events (document_id, stage, from_stage, from_status, to_status, attempt,
                                 worker, error_category, error_message, duration_s)
    VALUES (NEW.id, NEW.stage, OLD.stage, OLD.status, NEW.status, NEW.attempts,
            coalesce(NEW.lease_owner, OLD.lease_owner, actor),
            CASE WHEN errored THEN NEW.error_category END,
            CASE WHEN errored THEN NEW.error_message END,
            extract(epoch FROM clock_timestamp() - previous));
    RETURN NULL;
END
$$
"""

TRIGGERS = [
    """
    CREATE TRIGGER documents_event_on_insert AFTER INSERT ON documents
    FOR EACH ROW EXECUTE FUNCTION pagemill_document_event()
    """,
    """
    CREATE TRIGGER documents_event_on_change AFTER UPDATE ON documents
    FOR EACH ROW WHEN (
        OLD.status IS DISTINCT FROM NEW.status
        OR OLD.stage IS DISTINCT FROM NEW.stage
        OR OLD.attempts IS DISTINCT FROM NEW.attempts
        OR OLD.error_category IS DISTINCT FROM NEW.error_category
    ) EXECUTE FUNCTION pagemill_document_event()
    """,
]

INDEXES = [
    # Timelines, and the trigger's look-up of a document's previous event.
    "CREATE INDEX ix_document_events_document ON document_events (document_id, id)",
    # The roll-up reads events and calls by time, and so do the views for the recent tail.
    "CREATE INDEX ix_document_events_created ON document_events (created_at)",
    "CREATE INDEX ix_vlm_calls_created ON vlm_calls (created_at)",
    # Backlog and stuck work: only the (few) documents not final yet.
    "CREATE INDEX ix_documents_open ON documents (stage, status, updated_at)"
    f" WHERE status NOT IN {FINAL}",
    "CREATE INDEX ix_dead_letters_open_category ON dead_letters (error_category, created_at)"
    " WHERE replayed_at IS NULL",
    # The document list: newest first, filtered by status, schema or error, searched by key
    # prefix or invoice number.
    "CREATE INDEX ix_documents_created ON documents (created_at)",
    "CREATE INDEX ix_documents_schema_id ON documents (schema_name, id)",
    "CREATE INDEX ix_documents_status_id ON documents (status, id)",
    "CREATE INDEX ix_documents_error_id ON documents (error_category, id)"
    " WHERE error_category IS NOT NULL",
    "CREATE INDEX ix_documents_key ON documents (key text_pattern_ops)",
    "CREATE INDEX ix_extractions_invoice_number ON extractions ((data->>'invoice_number'))",
]

# --- roll-ups ----------------------------------------------------------------------------------
# Aggregating millions of raw rows on every dashboard refresh does not scale, so a periodic job
# (pipeline.usecases.rollup, run by the beat and by `pagemill web`) adds what happened up to a
# watermark into small hourly tables; the views read those plus the raw rows after the
# watermark (a few minutes' worth). Without the job the views are as right, only slower.
# Latencies are kept as histograms (8 buckets per doubling, each about 9 % wide), so the
# percentiles of any window are exact to within a bucket.

ROLLUP_TABLES = [
    # rolled_until NULL: nothing rolled up yet (the views read every raw row).
    """CREATE TABLE ops_rollup_state (
        source text PRIMARY KEY,
        rolled_until timestamptz)""",
    "INSERT INTO ops_rollup_state VALUES ('events', NULL), ('calls', NULL)",
    """CREATE TABLE ops_rollup_finished (
        hour timestamptz NOT NULL, schema_name text NOT NULL, status text NOT NULL,
        documents bigint NOT NULL, pages bigint NOT NULL,
        PRIMARY KEY (hour, schema_name, status))""",
    """CREATE TABLE ops_rollup_failures (
        hour timestamptz NOT NULL, error_category text NOT NULL, failures bigint NOT NULL,
        PRIMARY KEY (hour, error_category))""",
    """CREATE TABLE ops_rollup_latency (
        hour timestamptz NOT NULL, stage text NOT NULL, bucket integer NOT NULL,
        samples bigint NOT NULL,
        PRIMARY KEY (hour, stage, bucket))""",
    # schema_name '' for calls without a document (the key cannot hold NULL).
    """CREATE TABLE ops_rollup_cost (
        hour timestamptz NOT NULL, provider text NOT NULL, model text NOT NULL,
        schema_name text NOT NULL, calls bigint NOT NULL, input_tokens bigint NOT NULL,
        output_tokens bigint NOT NULL, cache_creation_input_tokens bigint NOT NULL,
        cache_read_input_tokens bigint NOT NULL, cost_usd numeric NOT NULL,
        unpriced_calls bigint NOT NULL,
        PRIMARY KEY (hour, provider, model, schema_name))""",
]

FUNCTIONS = [
    # Histogram bucket of a duration: 8 per doubling, from 1 ms.
    """CREATE FUNCTION pagemill_latency_bucket(seconds double precision) RETURNS integer
       LANGUAGE sql IMMUTABLE PARALLEL SAFE
       AS $$ SELECT floor(8 * log(2, greatest(seconds, 0.001)::numeric))::integer $$""",
]

# The raw rows after the roll-up's watermark. Functions, so that each query is planned with the
# watermark's value: in a view the planner cannot see it, guesses a third of the table, and
# picks hash joins over whole tables (and JIT) for what is a few minutes of rows.
TAILS = {
    "ops_tail_finished": ("events", "ops_finished_events",
                          "at timestamptz, schema_name text, status text, pages integer"),
    "ops_tail_event_samples": ("events", "ops_event_samples",
                               "at timestamptz, stage text, seconds double precision"),
    "ops_tail_errors": ("events", "ops_error_events", "at timestamptz, error_category text"),
    "ops_tail_call_samples": ("calls", "ops_call_samples",
                              "at timestamptz, seconds double precision"),
    "ops_tail_call_costs": ("calls", "ops_call_costs",
                            "at timestamptz, provider text, model text, schema_name text, "
                            "input_tokens integer, output_tokens integer, "
                            "cache_creation_input_tokens integer, "
                            "cache_read_input_tokens integer, cost_usd numeric"),
}


def _tail_function(name: str, source: str, view: str, columns: str) -> str:
    names = ", ".join(c.split()[0] for c in columns.split(", "))
    return f"""
        CREATE FUNCTION {name}() RETURNS TABLE ({columns}) LANGUAGE plpgsql STABLE AS $$
        DECLARE
            since timestamptz := coalesce(
                (SELECT rolled_until FROM ops_rollup_state WHERE source = '{source}'),
                '-infinity');
        BEGIN
            RETURN QUERY EXECUTE 'SELECT {names} FROM {view} WHERE at >= $1' USING since;
        END
        $$"""


_LAST_24H = "now() - interval '24 hours'"
# Hourly views cover the last 7 days in whole hours.
_LAST_7D = f"{hour('now()')} - interval '7 days'"


def _quantiles(partition: str) -> str:
    """p50/p95/p99 from histogram rows (bucket, n, cum, total) of one partition: the first
    bucket whose running count reaches q of the total, interpolated inside it (log scale)."""
    parts = []
    for name, q in (("p50_s", 0.5), ("p95_s", 0.95), ("p99_s", 0.99)):
        parts.append(
            f"power(2, min(CASE WHEN cum >= {q} * total"
            f" THEN bucket + ({q} * total - (cum - n))::float8 / n END) / 8.0) AS {name}"
        )
    return ",\n               ".join(parts)


def _histogram(columns: str, rows: str) -> str:
    """Running counts per bucket of the (columns..., bucket, n) rows, for _quantiles."""
    return f"""
        SELECT {columns}, bucket, n,
               sum(n) OVER (PARTITION BY {columns} ORDER BY bucket) AS cum,
               sum(n) OVER (PARTITION BY {columns}) AS total
          FROM (SELECT {columns}, bucket, sum(samples) AS n FROM ({rows}) r
                 GROUP BY {columns}, bucket) h
    """


def _latency_rows(since: str) -> str:
    """Histogram rows (hour, stage, bucket, samples) since `since`: rolled up, then the tail."""
    return f"""
        SELECT hour, stage, bucket, samples FROM ops_rollup_latency WHERE hour >= {hour(since)}
        UNION ALL
        SELECT {hour('s.at')}, s.stage, pagemill_latency_bucket(s.seconds), 1
          FROM ops_tail_event_samples() s
         WHERE s.at >= {since}
        UNION ALL
        SELECT {hour('c.at')}, 'model_call', pagemill_latency_bucket(c.seconds), 1
          FROM ops_tail_call_samples() c
         WHERE c.at >= {since}
    """


VIEWS = {
    # --- raw samples: what the roll-up adds up, and what the views read after its watermark
    # Documents that became final (the review's needs_review -> done is not a second one).
    "ops_finished_events": f"""
        SELECT e.created_at AS at, d.schema_name, e.to_status AS status,
               coalesce(d.page_count, 0) AS pages
          FROM document_events e
          JOIN documents d ON d.id = e.document_id
         WHERE e.to_status IN {FINAL}
           AND (e.from_status IS NULL OR e.from_status NOT IN {FINAL})
    """,
    # Documents that failed, and errors retried.
    "ops_error_events": """
        SELECT e.created_at AS at, e.error_category
          FROM document_events e
         WHERE e.error_category IS NOT NULL
    """,
    # Latency samples: queue_wait = pending until a worker claims it; prepare / extract = a
    # claim until the stage gave the document on (or back); upload_to_result = registered
    # (the bucket event) until final.
    "ops_event_samples": f"""
        SELECT e.created_at AS at,
               CASE WHEN e.from_status = 'pending' THEN 'queue_wait' ELSE e.from_stage END
                   AS stage,
               e.duration_s AS seconds
          FROM document_events e
         WHERE e.duration_s IS NOT NULL
           AND ((e.from_status = 'pending' AND e.to_status = 'processing')
                OR (e.from_status = 'processing' AND e.to_status <> 'processing'
                    AND e.from_stage IN ('prepare', 'extract')))
        UNION ALL
        SELECT e.created_at, 'upload_to_result',
               extract(epoch FROM e.created_at - d.created_at)::double precision
          FROM document_events e
          JOIN documents d ON d.id = e.document_id
         WHERE e.to_status IN {FINAL}
           AND (e.from_status IS NULL OR e.from_status NOT IN {FINAL})
    """,
    # One provider call (a call still `started` has no latency yet).
    "ops_call_samples": """
        SELECT c.created_at AS at, c.latency_ms / 1000.0::double precision AS seconds
          FROM vlm_calls c
         WHERE c.outcome <> 'started'
    """,
    # A call still `started` (in flight, or its worker died) has no known cost: unpriced.
    "ops_call_costs": """
        SELECT c.created_at AS at, c.provider, c.model, coalesce(d.schema_name, '') AS schema_name,
               c.input_tokens, c.output_tokens, c.cache_creation_input_tokens,
               c.cache_read_input_tokens, c.cost_usd
          FROM vlm_calls c
          LEFT JOIN documents d ON d.id = c.document_id
    """,
    # --- the contract views
    "ops_throughput_hourly": f"""
        SELECT hour, schema_name, status, sum(documents)::bigint AS documents,
               sum(pages)::bigint AS pages
          FROM (SELECT hour, schema_name, status, documents, pages
                  FROM ops_rollup_finished WHERE hour >= {_LAST_7D}
                UNION ALL
                SELECT {hour('f.at')}, f.schema_name, f.status, 1, f.pages
                  FROM ops_tail_finished() f
                 WHERE f.at >= {_LAST_7D}) x
         GROUP BY hour, schema_name, status
    """,
    "ops_stage_latency": f"""
        SELECT s.stage, q.p50_s, q.p95_s, q.p99_s, coalesce(q.samples, 0)::bigint AS samples
          FROM (VALUES (1, 'queue_wait'), (2, 'prepare'), (3, 'model_call'), (4, 'extract'),
                       (5, 'upload_to_result')) AS s(ord, stage)
          LEFT JOIN (
                SELECT stage, {_quantiles('stage')}, max(total) AS samples
                  FROM ({_histogram('stage', _latency_rows(_LAST_24H))}) c
                 GROUP BY stage) q ON q.stage = s.stage
         ORDER BY s.ord
    """,
    "ops_stage_latency_hourly": f"""
        SELECT hour, stage, {_quantiles('hour, stage')}, max(total)::bigint AS samples
          FROM ({_histogram('hour, stage', _latency_rows(_LAST_7D))}) c
         GROUP BY hour, stage
    """,
    # Documents that failed, and errors retried (events with an error category).
    "ops_failures_hourly": f"""
        SELECT hour, error_category, sum(failures)::bigint AS failures
          FROM (SELECT hour, error_category, failures
                  FROM ops_rollup_failures WHERE hour >= {_LAST_7D}
                UNION ALL
                SELECT {hour('e.at')}, e.error_category, 1
                  FROM ops_tail_errors() e
                 WHERE e.at >= {_LAST_7D}) x
         GROUP BY hour, error_category
    """,
    "ops_dead_letters": """
        SELECT l.error_category, count(*) AS open_letters, min(l.created_at) AS oldest_created_at,
               extract(epoch FROM now() - min(l.created_at))::double precision AS oldest_age_s
          FROM dead_letters l
         WHERE l.replayed_at IS NULL
         GROUP BY l.error_category
    """,
    "ops_backlog": f"""
        SELECT d.stage, d.status, count(*) AS documents,
               extract(epoch FROM now() - min(d.updated_at))::double precision AS oldest_age_s,
               d.wait_reason
          FROM documents d
         WHERE d.status NOT IN {FINAL}
         GROUP BY d.stage, d.status, d.wait_reason
    """,
    # The sweep re-enqueues such work after PAGEMILL_STUCK_AFTER_S; this view uses 30 minutes.
    "ops_stuck": f"""
        SELECT d.id AS document_id, d.bucket, d.key, d.stage, d.status,
               'lease_expired'::text AS reason, d.lease_until AS since,
               extract(epoch FROM now() - d.lease_until)::double precision AS age_s
          FROM documents d
         WHERE d.status NOT IN {FINAL} AND d.status = 'processing' AND d.lease_until < now()
        UNION ALL
        SELECT d.id, d.bucket, d.key, d.stage, d.status,
               'pending_too_long', greatest(d.updated_at, d.not_before),
               extract(epoch FROM now() - greatest(d.updated_at, d.not_before))::double precision
          FROM documents d
         WHERE d.status NOT IN {FINAL} AND d.status = 'pending'
           -- A document waiting for an outage or a budget is not stuck until its wait is over.
           AND greatest(d.updated_at, d.not_before) < now() - interval '30 minutes'
    """,
    "ops_cost_daily": f"""
        SELECT {day('hour')} AS day, provider, model, nullif(schema_name, '') AS schema_name,
               sum(calls)::bigint AS calls, sum(input_tokens)::bigint AS input_tokens,
               sum(output_tokens)::bigint AS output_tokens,
               sum(cache_creation_input_tokens)::bigint AS cache_creation_input_tokens,
               sum(cache_read_input_tokens)::bigint AS cache_read_input_tokens,
               sum(cost_usd)::numeric AS cost_usd, sum(unpriced_calls)::bigint AS unpriced_calls
          FROM (SELECT hour, provider, model, schema_name, calls, input_tokens, output_tokens,
                       cache_creation_input_tokens, cache_read_input_tokens, cost_usd,
                       unpriced_calls
                  FROM ops_rollup_cost
                UNION ALL
                SELECT {hour('c.at')}, c.provider, c.model, c.schema_name, 1, c.input_tokens,
                       c.output_tokens, c.cache_creation_input_tokens,
                       c.cache_read_input_tokens, coalesce(c.cost_usd, 0),
                       (c.cost_usd IS NULL)::integer
                  FROM ops_tail_call_costs() c) x
         GROUP BY 1, 2, 3, 4
    """,
}


def upgrade() -> None:
    op.create_table('document_events',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False),
    sa.Column('stage', sa.Text(), nullable=False),
    sa.Column('from_stage', sa.Text(), nullable=True),
    sa.Column('from_status', sa.Text(), nullable=True),
    sa.Column('to_status', sa.Text(), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('worker', sa.Text(), nullable=True),
    sa.Column('error_category', sa.Text(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('duration_s', sa.Float(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('clock_timestamp()'), nullable=False),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('review_corrections',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False),
    sa.Column('schema_name', sa.Text(), nullable=False),
    sa.Column('field', sa.Text(), nullable=False),
    sa.Column('action', sa.Text(), nullable=False),
    sa.Column('original', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('corrected', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('reviewer', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("action IN ('accepted', 'corrected')", name='ck_review_corrections_action'),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_index('ix_review_corrections_document', 'review_corrections', ['document_id', 'id'], unique=False)
    op.create_index('ix_review_corrections_created', 'review_corrections', ['created_at'], unique=False)
    op.execute(EVENT_FUNCTION)
    for statement in TRIGGERS:
        op.execute(statement)
    for statement in INDEXES:
        op.execute(statement)
    for statement in ROLLUP_TABLES + FUNCTIONS:
        op.execute(statement)
    for name, body in VIEWS.items():
        if name == "ops_throughput_hourly":  # the contract views read the tails
            for function, (source, view, columns) in TAILS.items():
                op.execute(_tail_function(function, source, view, columns))
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
        if name == "ops_throughput_hourly":
            for function in TAILS:
                op.execute(f"DROP FUNCTION IF EXISTS {function}()")
    op.execute("DROP FUNCTION IF EXISTS pagemill_latency_bucket(double precision)")
    for table in ("ops_rollup_cost", "ops_rollup_latency", "ops_rollup_failures",
                  "ops_rollup_finished", "ops_rollup_state"):
        op.execute(f"DROP TABLE IF EXISTS {table}")
    for statement in reversed(INDEXES):
        op.execute(f"DROP INDEX IF EXISTS {statement.split()[2]}")
    op.execute("DROP TRIGGER IF EXISTS documents_event_on_change ON documents")
    op.execute("DROP TRIGGER IF EXISTS documents_event_on_insert ON documents")
    op.execute("DROP FUNCTION IF EXISTS pagemill_document_event()")
    op.drop_index('ix_review_corrections_created', table_name='review_corrections')
    op.drop_index('ix_review_corrections_document', table_name='review_corrections')
    op.drop_table('review_corrections')
    op.drop_table('document_events')
