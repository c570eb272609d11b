"""jobs: a partial index of the jobs a launcher could take that none holds, by shape (queue, nodes, ranks per
node, threads per rank): the service's demand query reads it alone (SQLite and PostgreSQL; MariaDB has no
partial indexes)

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

WORK_SQL = ("session_id IS NULL AND state IN ('POSTPROCESSED', 'PREPROCESSED', 'READY', 'RESTART_READY', "
            "'RUN_DONE', 'RUN_ERROR', 'RUN_TIMEOUT', 'STAGED_IN')")  # models.WORK_SQL as of this revision


def upgrade() -> None:
    if op.get_bind().dialect.name not in ("sqlite", "postgresql"):
        return
    op.create_index('ix_jobs_work', 'jobs', ['queue', 'num_nodes', 'ranks_per_node', 'threads_per_rank', 'state',
                                            'session_id'],
                    unique=False, sqlite_where=sa.text(WORK_SQL), postgresql_where=sa.text(WORK_SQL))


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("sqlite", "postgresql"):
        return
    op.drop_index('ix_jobs_work', table_name='jobs')
