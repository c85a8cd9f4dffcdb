"""The load bench's own plumbing (bench/run.py): what the measured servers run with."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from bench.run import server_environments


def test_the_bench_servers_run_with_the_benchs_settings_not_the_callers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A setting exported in the shell that starts the bench (a JSON access line, debug
    logging, rate limits on) would change what is measured without showing in the report."""
    for name, value in {
        "LOG_FORMAT": "json",
        "LOG_LEVEL": "DEBUG",
        "RATE_LIMIT_ENABLED": "true",
        "DATABASE_URL": "postgresql+asyncpg://elsewhere/db",
        "PATH": "/usr/bin:/bin",
        "LANG": "C.UTF-8",
    }.items():
        monkeypatch.setenv(name, value)
    plan: Any = SimpleNamespace(
        args=SimpleNamespace(pool_size=10, workers=2),
        database_url="postgresql+asyncpg://postgres@127.0.0.1:5432/gallery_bench",
    )
    common, app_env = server_environments(plan, "s" * 64)
    for env in (common, app_env):
        assert "LOG_FORMAT" not in env
        assert "LOG_LEVEL" not in env
        assert env["PATH"] == "/usr/bin:/bin"
        assert env["LANG"] == "C.UTF-8"
    assert app_env["RATE_LIMIT_ENABLED"] == "false"
    assert app_env["DATABASE_URL"] == plan.database_url
    assert "DATABASE_URL" not in common
