"""0004_identity_skeletons recomputes every username key as the TR39 skeleton and reports,
without failing, the existing accounts whose names now collide; it goes back down too."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import create_async_engine

from tests.conftest import migrate, new_database

BEFORE = "0003_account_sessions"
CYRILLIC_ROOT = "r\u043e\u043et"
# (id, username, the key 0003 stored: the NFKC case-folded name)
ROWS = [
    (1, "root", "root"),
    (2, "Alice", "alice"),
    (3, CYRILLIC_ROOT, CYRILLIC_ROOT),
    (4, "r00t", "r00t"),
    (5, "bob", "bob"),
]


async def _keys(url: str) -> dict[int, str]:
    engine = create_async_engine(url)
    try:
        async with engine.connect() as connection:
            rows = await connection.execute(text("SELECT id, username_key FROM users"))
            return {row.id: row.username_key for row in rows}
    finally:
        await engine.dispose()


async def test_skeleton_migration_recomputes_keys_and_reports_collisions(
    backend: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with new_database(backend, tmp_path) as url:
        await migrate(url, BEFORE)
        engine = create_async_engine(url)
        try:
            async with engine.begin() as connection:
                for user_id, username, key in ROWS:
                    await connection.execute(
                        text(
                            "INSERT INTO users (id, username, username_key, email, email_key,"
                            " password_hash, is_active, is_admin, is_verified, date_joined)"
                            " VALUES (:id, :name, :key, :email, :email, 'x', :yes, :no, :yes,"
                            " :stamp)"
                        ),
                        {
                            "id": user_id,
                            "name": username,
                            "key": key,
                            "email": f"user{user_id}@example.com",
                            "yes": True,
                            "no": False,
                            "stamp": datetime(2026, 1, 1, tzinfo=UTC),
                        },
                    )
        finally:
            await engine.dispose()

        with caplog.at_level(logging.WARNING, logger="migrations.0004_identity_skeletons"):
            await migrate(url, "0004_identity_skeletons")
        keys = await _keys(url)
        # The oldest of each look-alike group holds the skeleton; the others a key that no
        # name can produce, so nothing fails and nobody takes anybody's place.
        assert keys == {1: "root", 2: "alice", 3: f"#3:{CYRILLIC_ROOT}", 4: "#4:r00t", 5: "bob"}
        report = "\n".join(
            r.getMessage() for r in caplog.records if r.name.startswith("migrations.")
        )
        assert f"'root' (user 1) and '{CYRILLIC_ROOT}' (user 3) now collide" in report
        assert "'root' (user 1) and 'r00t' (user 4) now collide" in report
        assert "2 existing username collision(s)" in report
        assert "bob" not in report

        await migrate(url, BEFORE, down=True)
        assert await _keys(url) == {user_id: key for user_id, _, key in ROWS}
        await migrate(url, "head")
