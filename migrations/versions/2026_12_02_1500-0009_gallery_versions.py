"""gallery versions: a number per user that changes with anything their gallery shows

Revision ID: 0009_gallery_versions
Revises: 0008_thumbnails
Create Date: 2026-12-02 15:00:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_gallery_versions"
down_revision: str | None = "0008_thumbnails"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Every existing gallery starts at 1: no tag was ever issued for it, so any start is new.
    # New users get a random start from the model (app/users/models.py), so a user id that
    # SQLite hands out again after a deletion never meets its predecessor's tags.
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("gallery_version", sa.BigInteger(), server_default="1", nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("users", schema=None) as batch_op:
        batch_op.drop_column("gallery_version")
