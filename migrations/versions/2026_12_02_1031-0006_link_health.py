"""link health: status, failures, validators, fingerprint and the recheck schedule

Revision ID: 0006_link_health
Revises: 0005_session_details
Create Date: 2026-12-02 10:20:00
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006_link_health"
down_revision: str | None = "0005_session_details"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# RECHECK_INTERVAL_SECONDS' default: images stored before this revision come due one
# interval after their last check, as new ones do, instead of all at once on upgrade.
FIRST_DUE_AFTER_SECONDS = 86400


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("status", sa.String(length=16), server_default="ok", nullable=False)
        )
        batch_op.add_column(
            sa.Column("failure_count", sa.Integer(), server_default="0", nullable=False)
        )
        batch_op.add_column(sa.Column("last_error", sa.String(length=64), nullable=True))
        batch_op.add_column(
            sa.Column("content_changed_at", sa.DateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("etag", sa.String(length=256), nullable=True))
        batch_op.add_column(sa.Column("last_modified", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("fingerprint", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("due_at", sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column("recheck_claim", sa.String(length=32), nullable=True))
        batch_op.create_check_constraint(
            op.f("ck_images_status"), "status IN ('ok', 'failing', 'broken')"
        )
    if op.get_bind().dialect.name == "sqlite":
        first_due = f"datetime(checked_at, '+{FIRST_DUE_AFTER_SECONDS} seconds')"
    else:
        first_due = f"checked_at + interval '{FIRST_DUE_AFTER_SECONDS} seconds'"
    op.execute(sa.text(f"UPDATE images SET due_at = {first_due}"))  # noqa: S608
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.alter_column("due_at", existing_type=sa.DateTime(timezone=True), nullable=False)
        batch_op.create_index("ix_images_due_at", ["due_at"], unique=False)
        batch_op.create_index("ix_images_status_id", ["status", "id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index("ix_images_status_id")
        batch_op.drop_index("ix_images_due_at")
        batch_op.drop_constraint(op.f("ck_images_status"), type_="check")
        batch_op.drop_column("recheck_claim")
        batch_op.drop_column("due_at")
        batch_op.drop_column("fingerprint")
        batch_op.drop_column("last_modified")
        batch_op.drop_column("etag")
        batch_op.drop_column("content_changed_at")
        batch_op.drop_column("last_error")
        batch_op.drop_column("failure_count")
        batch_op.drop_column("status")
