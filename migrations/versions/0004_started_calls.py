"""Provider calls are recorded as `started` before the request is sent.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-26 09:50:00
"""

from alembic import op


revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_OUTCOMES = "'ok', 'invalid_output', 'truncated', 'error'"


def upgrade() -> None:
    op.drop_constraint('ck_vlm_calls_outcome', 'vlm_calls', type_='check')
    op.create_check_constraint(
        'ck_vlm_calls_outcome', 'vlm_calls', f"outcome IN ('started', {_OUTCOMES})"
    )


def downgrade() -> None:
    # A call left `started` (its worker died) becomes an error of unknown outcome.
    op.execute(
        "UPDATE vlm_calls SET outcome = 'error', error_message = 'outcome unknown (worker died)'"
        " WHERE outcome = 'started'"
    )
    op.drop_constraint('ck_vlm_calls_outcome', 'vlm_calls', type_='check')
    op.create_check_constraint('ck_vlm_calls_outcome', 'vlm_calls', f"outcome IN ({_OUTCOMES})")
