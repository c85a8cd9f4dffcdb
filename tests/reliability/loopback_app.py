"""`uvicorn tests.reliability.loopback_app:create --factory`: the real app, configured from
the environment, whose image checks can only reach loopback. Used by the soak and the
shutdown tests, which run uvicorn as a separate process."""

from __future__ import annotations

import sys

from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.reliability.support import LoopbackOnlyTransport
from tests.support.image_host import LoopbackResolver


def create() -> FastAPI:
    return create_app(
        Settings(), image_fetch_transport=LoopbackOnlyTransport(), image_resolver=LoopbackResolver()
    )


def uvicorn_command(port: int, *options: str) -> list[str]:
    """The command that serves `create` with uvicorn on 127.0.0.1:`port`, plus `options`."""
    return [
        sys.executable, "-m", "uvicorn", f"{__name__}:create", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning", *options,
    ]  # fmt: skip
