"""Visitors and their interactions.

Revision ID: 0001
Revises: none
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "visitors",
        sa.Column("id", sa.Text(), primary_key=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
    )
    op.create_table(
        "interactions",
        sa.Column(
            "visitor_id",
            sa.Text(),
            sa.ForeignKey("visitors.id", ondelete="CASCADE", name="fk_interactions_visitor"),
            nullable=False,
        ),
        sa.Column("item_id", sa.Text(), nullable=False),
        sa.Column("rating", sa.Double(), nullable=True),
        sa.Column("kind", sa.Text(), nullable=False),
        # the order a visitor first rated their items in
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column(
            "updated_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.PrimaryKeyConstraint("visitor_id", "item_id", name="pk_interactions"),
        sa.CheckConstraint(
            "(kind = 'rating' AND rating IS NOT NULL) OR (kind = 'event' AND rating IS NULL)",
            name="ck_interactions_kind",
        ),
    )


def downgrade() -> None:
    op.drop_table("interactions")
    op.drop_table("visitors")
