"""Every state change is a row (document_events, written by a trigger), review corrections, and
the ops_* views the dashboard, Grafana and `pagemill status` read.

Column names of document_events and of the ops_* views are a contract with the Grafana panels
and `pagemill status`: add columns, never rename or drop them.

Revision ID: 0006
Revises: 0004
Create Date: 2026-12-04 14:30:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0004'
branch_labels = None
depends_on = None

FINAL = "('done', 'needs_review', 'failed')"


def utc_trunc(unit: str, column: str) -> str:
    """date_trunc in UTC, immutable (unlike date_trunc on timestamptz), so it can be indexed and
    a filter on the view's hour/day column reaches the index."""
    return f"(date_trunc('{unit}', {column} AT TIME ZONE 'UTC') AT TIME ZONE 'UTC')"


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
    "CREATE INDEX ix_document_events_created ON document_events (created_at)",
    "CREATE INDEX ix_document_events_errors ON document_events (created_at)"
    " INCLUDE (error_category) WHERE error_category IS NOT NULL",
    "CREATE INDEX ix_documents_finished ON documents (finished_at)"
    " INCLUDE (schema_name, status, page_count, created_at) WHERE finished_at IS NOT NULL",
    # Backlog and stuck work: only the (few) documents not final yet.
    "CREATE INDEX ix_documents_open ON documents (stage, status, updated_at)"
    f" WHERE status NOT IN {FINAL}",
    "CREATE INDEX ix_vlm_calls_created ON vlm_calls (created_at)",
    f"CREATE INDEX ix_vlm_calls_day ON vlm_calls ({day('created_at')})",
    "CREATE INDEX ix_dead_letters_open_category ON dead_letters (error_category, created_at)"
    " WHERE replayed_at IS NULL",
    # The document list: newest first, filtered by status or schema, searched by key.
    "CREATE INDEX ix_documents_created ON documents (created_at)",
    "CREATE INDEX ix_documents_schema_id ON documents (schema_name, id)",
    "CREATE INDEX ix_documents_status_id ON documents (status, id)",
    "CREATE INDEX ix_documents_bucket_key ON documents (bucket, key text_pattern_ops)",
    "CREATE INDEX ix_extractions_invoice_number ON extractions ((data->>'invoice_number'))",
]

_LAST_24H = "now() - interval '24 hours'"
# Hourly views cover the last 7 days in whole hours.
_LAST_7D = f"{hour('now()')} - interval '7 days'"

VIEWS = {
    "ops_throughput_hourly": f"""
        SELECT {hour('d.finished_at')} AS hour, d.schema_name, d.status,
               count(*) AS documents, coalesce(sum(d.page_count), 0)::bigint AS pages
          FROM documents d
         WHERE d.finished_at >= {_LAST_7D} AND d.status IN {FINAL}
         GROUP BY 1, 2, 3
    """,
    # Samples per stage: queue_wait = pending until a worker claims it; prepare / extract =
    # a claim until the stage gave the document on (or back); model_call = one provider call;
    # upload_to_result = registered (the bucket event) until final.
    "ops_stage_samples": f"""
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
        SELECT c.created_at, 'model_call', c.latency_ms / 1000.0::double precision
          FROM vlm_calls c
         WHERE c.outcome <> 'started'
        UNION ALL
        SELECT d.finished_at, 'upload_to_result',
               extract(epoch FROM d.finished_at - d.created_at)::double precision
          FROM documents d
         WHERE d.finished_at IS NOT NULL AND d.status IN {FINAL}
    """,
    "ops_stage_latency": f"""
        SELECT s.stage, p.pct[1] AS p50_s, p.pct[2] AS p95_s, p.pct[3] AS p99_s,
               coalesce(p.samples, 0) AS samples
          FROM (VALUES (1, 'queue_wait'), (2, 'prepare'), (3, 'model_call'), (4, 'extract'),
                       (5, 'upload_to_result')) AS s(ord, stage)
          LEFT JOIN (
                SELECT x.stage,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY x.seconds)
                           AS pct,
                       count(*) AS samples
                  FROM ops_stage_samples x
                 WHERE x.at >= {_LAST_24H}
                 GROUP BY x.stage) p ON p.stage = s.stage
         ORDER BY s.ord
    """,
    "ops_stage_latency_hourly": f"""
        SELECT g.hour, g.stage, g.pct[1] AS p50_s, g.pct[2] AS p95_s, g.pct[3] AS p99_s,
               g.samples
          FROM (SELECT {hour('x.at')} AS hour, x.stage,
                       percentile_cont(ARRAY[0.5, 0.95, 0.99]) WITHIN GROUP (ORDER BY x.seconds)
                           AS pct,
                       count(*) AS samples
                  FROM ops_stage_samples x
                 WHERE x.at >= {_LAST_7D}
                 GROUP BY 1, 2) g
    """,
    "ops_failures_hourly": f"""
        SELECT {hour('e.created_at')} AS hour, e.error_category, count(*) AS failures
          FROM document_events e
         WHERE e.error_category IS NOT NULL
           AND e.created_at >= {_LAST_7D}
         GROUP BY 1, 2
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
               extract(epoch FROM now() - min(d.updated_at))::double precision AS oldest_age_s
          FROM documents d
         WHERE d.status NOT IN {FINAL}
         GROUP BY d.stage, d.status
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
               'pending_too_long', d.updated_at,
               extract(epoch FROM now() - d.updated_at)::double precision
          FROM documents d
         WHERE d.status NOT IN {FINAL} AND d.status = 'pending'
           AND d.updated_at < now() - interval '30 minutes'
    """,
    # A call still `started` (in flight, or its worker died) has no known cost: unpriced.
    "ops_cost_daily": f"""
        SELECT {day('c.created_at')} AS day, c.provider, c.model, d.schema_name,
               count(*) AS calls,
               coalesce(sum(c.input_tokens), 0)::bigint AS input_tokens,
               coalesce(sum(c.output_tokens), 0)::bigint AS output_tokens,
               coalesce(sum(c.cache_creation_input_tokens), 0)::bigint
                   AS cache_creation_input_tokens,
               coalesce(sum(c.cache_read_input_tokens), 0)::bigint AS cache_read_input_tokens,
               coalesce(sum(c.cost_usd), 0)::numeric AS cost_usd,
               count(*) FILTER (WHERE c.cost_usd IS NULL) AS unpriced_calls
          FROM vlm_calls c
          LEFT JOIN documents d ON d.id = c.document_id
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
    for name, body in VIEWS.items():
        op.execute(f"CREATE VIEW {name} AS {body}")


def downgrade() -> None:
    for name in reversed(VIEWS):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    for statement in reversed(INDEXES):
        op.execute(f"DROP INDEX IF EXISTS {statement.split()[2]}")
    op.execute("DROP TRIGGER IF EXISTS documents_event_on_change ON documents")
    op.execute("DROP TRIGGER IF EXISTS documents_event_on_insert ON documents")
    op.execute("DROP FUNCTION IF EXISTS pagemill_document_event()")
    op.drop_index('ix_review_corrections_created', table_name='review_corrections')
    op.drop_index('ix_review_corrections_document', table_name='review_corrections')
    op.drop_table('review_corrections')
    op.drop_table('document_events')
