"""forget intake: request status and external reference, forget policies per model

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.alter_column("method", existing_type=sa.String(length=50), nullable=True)
        batch_op.add_column(sa.Column("status", sa.String(length=20), nullable=True))
        batch_op.add_column(sa.Column("external_ref", sa.String(length=200), nullable=True))
        batch_op.add_column(sa.Column("reason", sa.Text(), nullable=True))
        batch_op.create_index(
            "uq_forget_requests_tenant_external_ref", ["tenant_id", "external_ref"], unique=True
        )
        batch_op.create_index("ix_forget_requests_status_model", ["status", "model_id", "created_at"])
    op.create_table(
        "forget_policies",
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("method", sa.String(length=50), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("window_seconds", sa.Float(), nullable=False),
        sa.Column("max_requests", sa.Integer(), nullable=True),
        sa.Column("max_samples", sa.Integer(), nullable=True),
        sa.Column("evaluate", sa.Boolean(), nullable=False),
        sa.Column("head_model_id", sa.String(length=36), nullable=True),
        sa.Column("running_job_id", sa.String(length=36), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_forget_policies_model_id_models")),
        sa.PrimaryKeyConstraint("model_id", name=op.f("pk_forget_policies")),
    )
    with op.batch_alter_table("forget_policies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_forget_policies_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("forget_policies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_forget_policies_tenant_id"))
    op.drop_table("forget_policies")
    # Requests taken in by intake before their batch ran have no method; they get an empty one back.
    op.execute("UPDATE forget_requests SET method = '' WHERE method IS NULL")
    with op.batch_alter_table("forget_requests", schema=None) as batch_op:
        batch_op.drop_index("ix_forget_requests_status_model")
        batch_op.drop_index("uq_forget_requests_tenant_external_ref")
        batch_op.drop_column("reason")
        batch_op.drop_column("external_ref")
        batch_op.drop_column("status")
        batch_op.alter_column("method", existing_type=sa.String(length=50), nullable=False)
