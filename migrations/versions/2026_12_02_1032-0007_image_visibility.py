"""image visibility: public (every existing image) or private

Revision ID: 0007_image_visibility
Revises: 0006_link_health
Create Date: 2026-12-02 10:15:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007_image_visibility"
down_revision: str | None = "0006_link_health"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server default makes every image stored so far public, as it was before.
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("visibility", sa.String(length=16), server_default="public", nullable=False)
        )
        batch_op.create_check_constraint(
            op.f("ck_images_visibility"), "visibility IN ('public', 'private')"
        )


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_constraint(op.f("ck_images_visibility"), type_="check")
        batch_op.drop_column("visibility")
