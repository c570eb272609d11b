"""apps: preamble and per-machine overrides; jobs: priority and deadline, with a partial index of urgent jobs

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None

URGENT = "priority > 0 OR deadline IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.add_column(sa.Column('preamble', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('machines', sa.JSON(none_as_null=True), nullable=True))
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('priority', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('deadline', sa.Double(), nullable=True))
    op.create_index('ix_jobs_urgent', 'jobs', ['state', 'priority', 'id'], unique=False,
                    sqlite_where=sa.text(URGENT), postgresql_where=sa.text(URGENT))


def downgrade() -> None:
    op.drop_index('ix_jobs_urgent', table_name='jobs')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_column('deadline')
        batch_op.drop_column('priority')
    with op.batch_alter_table('apps', schema=None) as batch_op:
        batch_op.drop_column('machines')
        batch_op.drop_column('preamble')
