"""initial schema

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('apps',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('command', sa.Text(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('environment', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('preprocess', sa.Text(), nullable=True),
    sa.Column('postprocess', sa.Text(), nullable=True),
    sa.Column('error_handler', sa.Text(), nullable=True),
    sa.Column('timeout_handler', sa.Text(), nullable=True),
    sa.Column('on_error', sa.String(length=16), nullable=False),
    sa.Column('on_timeout', sa.String(length=16), nullable=False),
    sa.Column('shell', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_apps')),
    sa.UniqueConstraint('name', name=op.f('uq_apps_name'))
    )
    op.create_table('batch_jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('scheduler', sa.String(length=16), nullable=False),
    sa.Column('native_id', sa.String(length=128), nullable=True),
    sa.Column('queue', sa.String(length=64), nullable=True),
    sa.Column('project', sa.String(length=128), nullable=True),
    sa.Column('num_nodes', sa.Integer(), nullable=False),
    sa.Column('wall_time_min', sa.Double(), nullable=False),
    sa.Column('job_mode', sa.String(length=16), nullable=False),
    sa.Column('state', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('filters', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('workdir', sa.String(length=1024), nullable=True),
    sa.Column('submitted_at', sa.Double(), nullable=True),
    sa.Column('started_at', sa.Double(), nullable=True),
    sa.Column('ended_at', sa.Double(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_batch_jobs'))
    )
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.create_index('ix_batch_jobs_state', ['state'], unique=False)

    op.create_table('events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('from_state', sa.String(length=20), nullable=True),
    sa.Column('to_state', sa.String(length=20), nullable=False),
    sa.Column('timestamp', sa.Double(), nullable=False),
    sa.Column('actor', sa.String(length=255), nullable=False),
    sa.Column('message', sa.Text(), nullable=True),
    sa.Column('data', sa.JSON(none_as_null=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_events'))
    )
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.create_index('ix_events_job_id', ['job_id', 'id'], unique=False)

    op.create_table('launcher_sessions',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('batch_job_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('job_mode', sa.String(length=16), nullable=False),
    sa.Column('started_at', sa.Double(), nullable=False),
    sa.Column('heartbeat_at', sa.Double(), nullable=False),
    sa.Column('ended_at', sa.Double(), nullable=True),
    sa.Column('info', sa.JSON(none_as_null=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_launcher_sessions'))
    )
    op.create_table('jobs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('workflow', sa.String(length=255), nullable=False),
    sa.Column('app_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('params', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('args', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('workdir', sa.String(length=1024), nullable=True),
    sa.Column('num_nodes', sa.Integer(), nullable=False),
    sa.Column('ranks_per_node', sa.Integer(), nullable=False),
    sa.Column('threads_per_rank', sa.Integer(), nullable=False),
    sa.Column('gpus_per_rank', sa.Integer(), nullable=False),
    sa.Column('wall_time_min', sa.Double(), nullable=True),
    sa.Column('environment', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('tags', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('data', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('stage_in', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('stage_out', sa.JSON(none_as_null=True), nullable=True),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('state_message', sa.Text(), nullable=True),
    sa.Column('queue', sa.String(length=64), nullable=True),
    sa.Column('machine', sa.String(length=64), nullable=True),
    sa.Column('session_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('created_at', sa.Double(), nullable=False),
    sa.Column('updated_at', sa.Double(), nullable=False),
    sa.ForeignKeyConstraint(['app_id'], ['apps.id'], name=op.f('fk_jobs_app_id_apps')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_jobs'))
    )
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.create_index('ix_jobs_name', ['name'], unique=False)
        batch_op.create_index('ix_jobs_state_id', ['state', 'id'], unique=False)
        batch_op.create_index('ix_jobs_workflow', ['workflow'], unique=False)

    op.create_table('job_parents',
    sa.Column('parent_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('child_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.ForeignKeyConstraint(['child_id'], ['jobs.id'], name=op.f('fk_job_parents_child_id_jobs'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['parent_id'], ['jobs.id'], name=op.f('fk_job_parents_parent_id_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('parent_id', 'child_id', name=op.f('pk_job_parents'))
    )
    with op.batch_alter_table('job_parents', schema=None) as batch_op:
        batch_op.create_index('ix_job_parents_child_parent', ['child_id', 'parent_id'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('job_parents', schema=None) as batch_op:
        batch_op.drop_index('ix_job_parents_child_parent')

    op.drop_table('job_parents')
    with op.batch_alter_table('jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_jobs_workflow')
        batch_op.drop_index('ix_jobs_state_id')
        batch_op.drop_index('ix_jobs_name')

    op.drop_table('jobs')
    op.drop_table('launcher_sessions')
    with op.batch_alter_table('events', schema=None) as batch_op:
        batch_op.drop_index('ix_events_job_id')

    op.drop_table('events')
    with op.batch_alter_table('batch_jobs', schema=None) as batch_op:
        batch_op.drop_index('ix_batch_jobs_state')

    op.drop_table('batch_jobs')
    op.drop_table('apps')
