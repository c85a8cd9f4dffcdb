"""username keys become the TR39 confusable skeleton of the folded name

Revision ID: 0004_identity_skeletons
Revises: 0003_account_sessions
Create Date: 2026-12-02 10:30:00.000000

Existing accounts whose names now collide (`root`, and `r\u043e\u043et` with Cyrillic letters) are
kept, and reported in the log: the oldest account of each group gets the skeleton key; the
others get a key no name can produce (`#<id>:<old key>`), so they still sign in with their
email and an operator decides what to rename.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from app.users.identity_keys import USERNAME_KEY_MAX_LENGTH, fold_username, username_key

revision: str = "0004_identity_skeletons"
down_revision: str | None = "0003_account_sessions"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

logger = logging.getLogger("migrations.0004_identity_skeletons")

users = sa.table(
    "users",
    sa.column("id", sa.BigInteger()),
    sa.column("username", sa.String()),
    sa.column("username_key", sa.String()),
)


def _rewrite_keys(wanted: dict[int, str], current: dict[int, str]) -> None:
    """Give each user its wanted key; through temporary keys, so that no intermediate state
    breaks the unique constraint (two rows may swap keys)."""
    changed = {user_id: key for user_id, key in wanted.items() if key != current[user_id]}
    connection = op.get_bind()
    for user_id in changed:
        connection.execute(
            users.update().where(users.c.id == user_id).values(username_key=f"#tmp:{user_id}")
        )
    for user_id, key in changed.items():
        connection.execute(users.update().where(users.c.id == user_id).values(username_key=key))


def _collision_key(user_id: int, old_key: str) -> str:
    # `#` is not allowed in usernames: no registration can ever produce or claim this key.
    return f"#{user_id}:{old_key}"[:USERNAME_KEY_MAX_LENGTH]


def upgrade() -> None:
    rows = op.get_bind().execute(
        sa.select(users.c.id, users.c.username, users.c.username_key).order_by(users.c.id)
    )
    current: dict[int, str] = {}
    names: dict[int, str] = {}
    wanted: dict[int, str] = {}
    holder: dict[str, int] = {}
    collisions: list[tuple[int, int]] = []
    for user_id, username, old_key in rows:
        current[user_id] = old_key
        names[user_id] = username
        key = username_key(username)
        if len(key) > USERNAME_KEY_MAX_LENGTH:
            logger.warning(
                "user %d: the key of %r is longer than %d characters; its old key is kept",
                user_id,
                username,
                USERNAME_KEY_MAX_LENGTH,
            )
            key = old_key
        if key in holder:
            collisions.append((holder[key], user_id))
            key = _collision_key(user_id, old_key)
        holder[key] = user_id
        wanted[user_id] = key
    _rewrite_keys(wanted, current)
    for first, second in collisions:
        logger.warning(
            "usernames %r (user %d) and %r (user %d) now collide (look-alike letters); "
            "user %d keeps the name's key, user %d signs in with its email until renamed",
            names[first],
            first,
            names[second],
            second,
            first,
            second,
        )
    if collisions:
        logger.warning("%d existing username collision(s) reported above", len(collisions))


def downgrade() -> None:
    rows = op.get_bind().execute(sa.select(users.c.id, users.c.username, users.c.username_key))
    current: dict[int, str] = {}
    wanted: dict[int, str] = {}
    for user_id, username, key in rows:
        current[user_id] = key
        # The folded name was the key before; distinct skeletons always had distinct folds.
        wanted[user_id] = fold_username(username)[:USERNAME_KEY_MAX_LENGTH]
    _rewrite_keys(wanted, current)
