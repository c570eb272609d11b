"""jobs: for each runnable state, a partial index of its jobs that no launcher holds, which the claim reads
(SQLite and PostgreSQL; MariaDB has no partial indexes)

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None

STATES = ("PREPROCESSED", "RESTART_READY")


def upgrade() -> None:
    if op.get_bind().dialect.name not in ("sqlite", "postgresql"):
        return
    for st in STATES:
        where = sa.text(f"session_id IS NULL AND state = '{st}'")
        op.create_index(f'ix_jobs_claim_{st.lower()}', 'jobs', ['id'], unique=False, sqlite_where=where,
                        postgresql_where=where)


def downgrade() -> None:
    if op.get_bind().dialect.name not in ("sqlite", "postgresql"):
        return
    for st in STATES:
        op.drop_index(f'ix_jobs_claim_{st.lower()}', table_name='jobs')
