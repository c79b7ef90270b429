"""Waiting documents (not_before, wait_reason, waiting_since, retries) and chunk checkpoints.

A document that cannot make progress because something it needs is down waits in Postgres
(pending, with the earliest time it may run again and why) instead of in a broker countdown;
the sweep resumes it. Outage waits do not count against the retry budget: `retries` counts
only the failures that do. `chunk_results` keeps each validated chunk answer of a long document
so that a retry resumes after the last finished chunk instead of paying for it again.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 10:00:00
"""

from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql


revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('documents', sa.Column('not_before', sa.DateTime(timezone=True), nullable=True))
    op.add_column('documents', sa.Column('wait_reason', sa.Text(), nullable=True))
    op.add_column(
        'documents', sa.Column('waiting_since', sa.DateTime(timezone=True), nullable=True)
    )
    op.add_column(
        'documents', sa.Column('retries', sa.Integer(), server_default=sa.text('0'), nullable=False)
    )
    # The sweep looks for waiting documents that are due; few rows, so a small partial index.
    op.create_index(
        'ix_documents_waiting',
        'documents',
        ['not_before'],
        postgresql_where=sa.text("status = 'pending' AND not_before IS NOT NULL"),
    )
    op.create_table(
        'chunk_results',
        sa.Column('document_id', sa.BigInteger(), nullable=False),
        sa.Column('first_page', sa.Integer(), nullable=False),
        sa.Column('stop_page', sa.Integer(), nullable=False),
        sa.Column('schema_name', sa.Text(), nullable=False),
        sa.Column('schema_version', sa.Text(), nullable=False),
        sa.Column('data', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column(
            'created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(['document_id'], ['documents.id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('document_id', 'first_page', 'stop_page'),
    )


def downgrade() -> None:
    op.drop_table('chunk_results')
    op.drop_index('ix_documents_waiting', table_name='documents')
    op.drop_column('documents', 'retries')
    op.drop_column('documents', 'waiting_since')
    op.drop_column('documents', 'wait_reason')
    op.drop_column('documents', 'not_before')
