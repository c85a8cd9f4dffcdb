"""image metadata: width, height and checked_at

Revision ID: 0002_image_metadata
Revises: c94f1f4c4479
Create Date: 2026-11-27 18:30:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002_image_metadata"
down_revision: str | None = "c94f1f4c4479"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("width", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("height", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("checked_at", sa.DateTime(timezone=True), nullable=True))
    # Images stored before this revision were checked when their URL was last set, which
    # is no later than their last update: the closest time the data holds.
    op.execute(sa.text("UPDATE images SET checked_at = updated_at"))
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column(
            "checked_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("checked_at")
        batch_op.drop_column("height")
        batch_op.drop_column("width")
