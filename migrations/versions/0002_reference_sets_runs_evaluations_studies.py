"""reference sets, runs, evaluations, studies

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "reference_sets",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("dataset_id", sa.String(length=36), nullable=False),
        sa.Column("forget_ids", sa.LargeBinary(), nullable=False),
        sa.Column("n_forget", sa.Integer(), nullable=False),
        sa.Column("forget_sha256", sa.String(length=64), nullable=False),
        sa.Column("excluded_ids", sa.LargeBinary(), nullable=True),
        sa.Column("arch", sa.JSON(), nullable=False),
        sa.Column("recipe", sa.JSON(), nullable=False),
        sa.Column("recipe_sha256", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["dataset_id"], ["datasets.id"], name=op.f("fk_reference_sets_dataset_id_datasets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_reference_sets")),
    )
    with op.batch_alter_table("reference_sets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_reference_sets_dataset_id"), ["dataset_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_reference_sets_tenant_id"), ["tenant_id"], unique=False)
        batch_op.create_index(
            "uq_reference_sets_key",
            ["tenant_id", "dataset_id", "forget_sha256", "recipe_sha256"],
            unique=True,
        )

    op.create_table(
        "studies",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("reference_set_id", sa.String(length=36), nullable=False),
        sa.Column("methods", sa.JSON(), nullable=False),
        sa.Column("n_models", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_studies_model_id_models")),
        sa.ForeignKeyConstraint(
            ["reference_set_id"],
            ["reference_sets.id"],
            name=op.f("fk_studies_reference_set_id_reference_sets"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_studies")),
    )
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_studies_model_id"), ["model_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_studies_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "evaluations",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("model_id", sa.String(length=36), nullable=False),
        sa.Column("reference_set_id", sa.String(length=36), nullable=False),
        sa.Column("study_id", sa.String(length=36), nullable=True),
        sa.Column("method", sa.String(length=50), nullable=False),
        sa.Column("params", sa.JSON(), nullable=False),
        sa.Column("n_models", sa.Integer(), nullable=False),
        sa.Column("delta", sa.Float(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("results", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], name=op.f("fk_evaluations_model_id_models")),
        sa.ForeignKeyConstraint(
            ["reference_set_id"],
            ["reference_sets.id"],
            name=op.f("fk_evaluations_reference_set_id_reference_sets"),
        ),
        sa.ForeignKeyConstraint(["study_id"], ["studies.id"], name=op.f("fk_evaluations_study_id_studies")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_evaluations")),
    )
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_evaluations_model_id"), ["model_id"], unique=False)
        batch_op.create_index(
            batch_op.f("ix_evaluations_reference_set_id"), ["reference_set_id"], unique=False
        )
        batch_op.create_index(batch_op.f("ix_evaluations_study_id"), ["study_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_evaluations_tenant_id"), ["tenant_id"], unique=False)

    op.create_table(
        "runs",
        sa.Column("id", sa.String(length=36), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=20), nullable=False),
        sa.Column("reference_set_id", sa.String(length=36), nullable=True),
        sa.Column("evaluation_id", sa.String(length=36), nullable=True),
        sa.Column("seed", sa.Integer(), nullable=False),
        sa.Column("job_id", sa.String(length=36), nullable=False),
        sa.Column("outputs", sa.Text(), nullable=True),
        sa.Column("metrics", sa.JSON(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["evaluation_id"], ["evaluations.id"], name=op.f("fk_runs_evaluation_id_evaluations")
        ),
        sa.ForeignKeyConstraint(
            ["reference_set_id"], ["reference_sets.id"], name=op.f("fk_runs_reference_set_id_reference_sets")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_runs_evaluation_id"), ["evaluation_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_job_id"), ["job_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_reference_set_id"), ["reference_set_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_runs_tenant_id"), ["tenant_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("runs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_runs_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_runs_reference_set_id"))
        batch_op.drop_index(batch_op.f("ix_runs_job_id"))
        batch_op.drop_index(batch_op.f("ix_runs_evaluation_id"))

    op.drop_table("runs")
    with op.batch_alter_table("evaluations", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_evaluations_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_evaluations_study_id"))
        batch_op.drop_index(batch_op.f("ix_evaluations_reference_set_id"))
        batch_op.drop_index(batch_op.f("ix_evaluations_model_id"))

    op.drop_table("evaluations")
    with op.batch_alter_table("studies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_studies_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_studies_model_id"))

    op.drop_table("studies")
    with op.batch_alter_table("reference_sets", schema=None) as batch_op:
        batch_op.drop_index("uq_reference_sets_key")
        batch_op.drop_index(batch_op.f("ix_reference_sets_tenant_id"))
        batch_op.drop_index(batch_op.f("ix_reference_sets_dataset_id"))

    op.drop_table("reference_sets")
