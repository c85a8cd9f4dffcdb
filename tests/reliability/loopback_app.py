"""`uvicorn tests.reliability.loopback_app:create --factory`: the real app, configured from
the environment, whose image checks can only reach loopback. Used by the soak and the
shutdown tests, which run uvicorn as a separate process."""

from __future__ import annotations

from fastapi import FastAPI

from app.config import Settings
from app.main import create_app
from tests.image_host import LoopbackResolver
from tests.reliability.support import LoopbackOnlyTransport


def create() -> FastAPI:
    return create_app(
        Settings(), image_fetch_transport=LoopbackOnlyTransport(), image_resolver=LoopbackResolver()
    )
