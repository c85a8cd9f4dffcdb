"""sessions: when last used, from which browser and address

Revision ID: 0005_session_details
Revises: 0004_identity_skeletons
Create Date: 2026-12-02 10:30:00.000000
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005_session_details"
down_revision: str | None = "0004_identity_skeletons"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("user_agent", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("ip_address", sa.String(length=45), nullable=True))
    # Sessions that exist already were last seen, as far as we know, when they started.
    op.execute("UPDATE account_sessions SET last_used_at = created_at")
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.alter_column(
            "last_used_at", existing_type=sa.DateTime(timezone=True), nullable=False
        )


def downgrade() -> None:
    with op.batch_alter_table("account_sessions", schema=None) as batch_op:
        batch_op.drop_column("ip_address")
        batch_op.drop_column("user_agent")
        batch_op.drop_column("last_used_at")
