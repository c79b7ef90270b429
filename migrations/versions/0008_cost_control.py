"""Cost control: call estimates and savings, page cache, spending caps, batches, cost views.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-04 10:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_PURPOSES = "'extract', 'reask', 'retry_truncated', 'recheck', 'escalate', 'cache_hit'"

_MONEY = sa.Numeric(18, 8)

# Charged with a call's estimate when it starts, a cap's ledger row is corrected to the actual
# cost when the call's outcome is written (an unknown cost keeps the estimate).
_SETTLE_FUNCTION = """
CREATE FUNCTION pagemill_settle_budget() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF OLD.outcome = 'started' AND NEW.outcome <> 'started'
     AND cardinality(NEW.budget_ledger_ids) > 0 THEN
    UPDATE budget_ledger
       SET spent_usd = spent_usd + coalesce(NEW.cost_usd, NEW.estimated_cost_usd, 0)
                                 - coalesce(NEW.estimated_cost_usd, 0),
           updated_at = now()
     WHERE id = ANY(NEW.budget_ledger_ids);
  END IF;
  RETURN NULL;
END
$$
"""

_COST_CALLS = """
SELECT c.id AS row_id, c.call_id, c.document_id, c.created_at,
       (c.created_at AT TIME ZONE 'UTC')::date AS day,
       c.provider, c.model, c.purpose, c.outcome, c.service_tier, c.attempt,
       d.schema_name, d.bucket, d.key, d.status AS document_status,
       CASE WHEN d.id IS NULL THEN NULL
            ELSE 's3://' || d.bucket || '/'
                 || CASE WHEN strpos(d.key, '/') > 0 THEN split_part(d.key, '/', 1) || '/'
                         ELSE '' END
       END AS prefix,
       c.page_indexes, cardinality(c.page_indexes) AS pages,
       c.input_tokens, c.output_tokens, c.cache_creation_input_tokens, c.cache_read_input_tokens,
       c.input_tokens + c.cache_creation_input_tokens + c.cache_read_input_tokens
           AS total_input_tokens,
       c.cost_usd, c.estimated_input_tokens, c.estimated_cost_usd,
       c.prompt_cache_marked, c.cached_from_call_id,
       (c.purpose = 'extract' AND c.saved_cascade_usd <> 0) AS cascade_first,
       c.saved_page_cache_usd, c.saved_cascade_usd, c.saved_batch_usd, c.saved_prompt_cache_usd,
       c.saved_page_cache_usd + c.saved_cascade_usd + c.saved_batch_usd
           + c.saved_prompt_cache_usd AS saved_usd
  FROM vlm_calls c
  LEFT JOIN documents d ON d.id = c.document_id
"""

# A frozen copy of pipeline/cost/reports.py AGGREGATES (the command and the views agree; a test
# checks it).
_ANSWERED = "outcome IN ('ok', 'invalid_output', 'truncated') AND purpose <> 'cache_hit'"
_AGGREGATES = (
    ("calls", "count(*) FILTER (WHERE purpose <> 'cache_hit')"),
    ("documents", "count(DISTINCT document_id)"),
    ("pages", "coalesce(sum(pages) FILTER (WHERE purpose IN ('extract', 'cache_hit')), 0)"),
    ("cost_usd", "coalesce(sum(cost_usd), 0)"),
    ("unpriced_calls", "count(*) FILTER (WHERE cost_usd IS NULL)"),
    ("input_tokens", "coalesce(sum(total_input_tokens), 0)"),
    ("output_tokens", "coalesce(sum(output_tokens), 0)"),
    ("saved_page_cache_usd", "coalesce(sum(saved_page_cache_usd), 0)"),
    ("saved_cascade_usd", "coalesce(sum(saved_cascade_usd), 0)"),
    ("saved_batch_usd", "coalesce(sum(saved_batch_usd), 0)"),
    ("saved_prompt_cache_usd", "coalesce(sum(saved_prompt_cache_usd), 0)"),
    ("saved_usd", "coalesce(sum(saved_usd), 0)"),
    ("cache_hits", "count(*) FILTER (WHERE purpose = 'cache_hit')"),
    ("cascade_pages", "coalesce(sum(pages) FILTER (WHERE cascade_first), 0)"),
    ("escalated_pages", "coalesce(sum(pages) FILTER (WHERE purpose = 'escalate'), 0)"),
    ("batch_calls", "count(*) FILTER (WHERE service_tier = 'batch')"),
    ("prompt_cache_marked", "count(*) FILTER (WHERE prompt_cache_marked)"),
    ("prompt_cache_hits",
     "count(*) FILTER (WHERE prompt_cache_marked AND cache_read_input_tokens > 0)"),
    ("estimated_input_tokens",
     f"coalesce(sum(estimated_input_tokens) FILTER (WHERE {_ANSWERED}), 0)"),
    ("actual_input_tokens",
     f"coalesce(sum(total_input_tokens) FILTER (WHERE {_ANSWERED}"
     " AND estimated_input_tokens IS NOT NULL), 0)"),
    ("estimated_cost_usd",
     f"coalesce(sum(estimated_cost_usd) FILTER (WHERE {_ANSWERED} AND cost_usd IS NOT NULL), 0)"),
    ("actual_cost_usd",
     f"coalesce(sum(cost_usd) FILTER (WHERE {_ANSWERED} AND estimated_cost_usd IS NOT NULL), 0)"),
)
_DIMENSIONS = {
    "cost_by_day": "day",
    "cost_by_model": "provider, model",
    "cost_by_schema": "schema_name",
    "cost_by_prefix": "prefix",
    "cost_by_document": "document_id, bucket, key",
}


def _grouped(dims: str) -> str:
    columns = ",\n       ".join(f"{expr} AS {name}" for name, expr in _AGGREGATES)
    return f"SELECT {dims},\n       {columns}\n  FROM cost_calls\n GROUP BY {dims}"


# Estimate vs actual per model: how far the image-rule estimates are off, call by call.
_COST_ESTIMATES = f"""
SELECT provider, model,
       count(*) AS calls,
       sum(estimated_input_tokens) AS estimated_input_tokens,
       sum(total_input_tokens) AS actual_input_tokens,
       round(avg(abs(estimated_input_tokens - total_input_tokens)::numeric
                 / greatest(total_input_tokens, 1)), 4) AS input_mean_abs_error,
       sum(estimated_cost_usd) AS estimated_cost_usd,
       sum(cost_usd) AS actual_cost_usd,
       round(avg(abs(estimated_cost_usd - cost_usd) / nullif(cost_usd, 0)), 4)
           AS cost_mean_abs_error
  FROM cost_calls
 WHERE {_ANSWERED} AND estimated_input_tokens IS NOT NULL AND cost_usd IS NOT NULL
 GROUP BY provider, model
"""


def upgrade() -> None:
    op.add_column('documents', sa.Column('priority', sa.Text(), server_default='standard', nullable=False))
    op.add_column('vlm_calls', sa.Column('purpose', sa.Text(), server_default='extract', nullable=False))
    op.add_column('vlm_calls', sa.Column('estimated_input_tokens', sa.Integer(), nullable=True))
    op.add_column('vlm_calls', sa.Column('estimated_cost_usd', _MONEY, nullable=True))
    op.add_column('vlm_calls', sa.Column('cached_from_call_id', sa.UUID(), nullable=True))
    op.add_column('vlm_calls', sa.Column('prompt_cache_marked', sa.Boolean(), server_default=sa.text('false'), nullable=False))
    for name in ('page_cache', 'cascade', 'batch', 'prompt_cache'):
        op.add_column('vlm_calls', sa.Column(f'saved_{name}_usd', _MONEY, server_default='0', nullable=False))
    op.add_column('vlm_calls', sa.Column('budget_ledger_ids', postgresql.ARRAY(sa.BigInteger()), server_default='{}', nullable=False))
    op.create_check_constraint('ck_vlm_calls_purpose', 'vlm_calls', f"purpose IN ({_PURPOSES})")

    op.create_table('page_cache',
    sa.Column('key', sa.Text(), nullable=False),
    sa.Column('schema_name', sa.Text(), nullable=False),
    sa.Column('schema_version', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('final', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('source_call_id', sa.UUID(), nullable=False),
    sa.Column('source_document_id', sa.BigInteger(), nullable=True),
    sa.Column('cost_usd', _MONEY, nullable=True),
    sa.Column('hits', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('last_hit_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['source_document_id'], ['documents.id'], ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('key')
    )
    op.create_table('budget_caps',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('period', sa.Text(), nullable=False),
    sa.Column('prefix', sa.Text(), server_default='', nullable=False),
    sa.Column('limit_usd', _MONEY, nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("period IN ('day', 'month')", name='ck_cap_period'),
    sa.CheckConstraint('limit_usd >= 0', name='ck_cap_limit'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('period', 'prefix', name='uq_budget_caps_period_prefix')
    )
    op.create_table('budget_ledger',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('period', sa.Text(), nullable=False),
    sa.Column('period_start', sa.Date(), nullable=False),
    sa.Column('prefix', sa.Text(), server_default='', nullable=False),
    sa.Column('spent_usd', _MONEY, server_default='0', nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('period', 'period_start', 'prefix', name='uq_budget_ledger_scope')
    )
    op.create_table('batch_requests',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('document_id', sa.BigInteger(), nullable=False),
    sa.Column('call_key', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('purpose', sa.Text(), nullable=False),
    sa.Column('page_indexes', postgresql.ARRAY(sa.Integer()), server_default='{}', nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('status', sa.Text(), server_default='queued', nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('call_id', sa.UUID(), nullable=True),
    sa.Column('batch_id', sa.Text(), nullable=True),
    sa.Column('estimated_input_tokens', sa.Integer(), nullable=True),
    sa.Column('estimated_cost_usd', _MONEY, nullable=True),
    sa.Column('result', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('error_category', sa.Text(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("status IN ('queued', 'submitting', 'submitted', 'succeeded', 'failed')", name='ck_batch_requests_status'),
    sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('document_id', 'call_key', name='uq_batch_requests_call')
    )
    op.create_index('ix_batch_requests_status', 'batch_requests', ['status', 'provider', 'model'], unique=False)
    op.create_index('ix_batch_requests_batch', 'batch_requests', ['batch_id'], unique=False)
    op.create_table('message_batches',
    sa.Column('id', sa.Text(), nullable=False),
    sa.Column('provider', sa.Text(), nullable=False),
    sa.Column('model', sa.Text(), nullable=False),
    sa.Column('status', sa.Text(), nullable=False),
    sa.Column('request_count', sa.Integer(), nullable=False),
    sa.Column('request_ids', postgresql.ARRAY(sa.BigInteger()), server_default='{}', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('polled_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )

    op.execute(_SETTLE_FUNCTION)
    op.execute(
        "CREATE TRIGGER vlm_calls_settle_budget AFTER UPDATE OF outcome ON vlm_calls"
        " FOR EACH ROW EXECUTE FUNCTION pagemill_settle_budget()"
    )
    op.execute(f"CREATE VIEW cost_calls AS {_COST_CALLS}")
    for name, dims in _DIMENSIONS.items():
        op.execute(f"CREATE VIEW {name} AS {_grouped(dims)}")
    op.execute(f"CREATE VIEW cost_estimates AS {_COST_ESTIMATES}")


def downgrade() -> None:
    op.execute("DROP VIEW IF EXISTS cost_estimates")
    for name in reversed(list(_DIMENSIONS)):
        op.execute(f"DROP VIEW IF EXISTS {name}")
    op.execute("DROP VIEW IF EXISTS cost_calls")
    op.execute("DROP TRIGGER IF EXISTS vlm_calls_settle_budget ON vlm_calls")
    op.execute("DROP FUNCTION IF EXISTS pagemill_settle_budget()")
    op.drop_table('message_batches')
    op.drop_index('ix_batch_requests_batch', table_name='batch_requests')
    op.drop_index('ix_batch_requests_status', table_name='batch_requests')
    op.drop_table('batch_requests')
    op.drop_table('budget_ledger')
    op.drop_table('budget_caps')
    op.drop_table('page_cache')
    op.drop_constraint('ck_vlm_calls_purpose', 'vlm_calls', type_='check')
    op.drop_column('vlm_calls', 'budget_ledger_ids')
    for name in ('prompt_cache', 'batch', 'cascade', 'page_cache'):
        op.drop_column('vlm_calls', f'saved_{name}_usd')
    op.drop_column('vlm_calls', 'prompt_cache_marked')
    op.drop_column('vlm_calls', 'cached_from_call_id')
    op.drop_column('vlm_calls', 'estimated_cost_usd')
    op.drop_column('vlm_calls', 'estimated_input_tokens')
    op.drop_column('vlm_calls', 'purpose')
    op.drop_column('documents', 'priority')
