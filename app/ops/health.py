"""Health: is the process up, and can it serve (does the database answer in time)?"""

from __future__ import annotations

import asyncio
import logging

from fastapi import status
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from app.errors import AppError

logger = logging.getLogger(__name__)

# A readiness probe must answer quickly even when the database hangs.
READY_TIMEOUT_SECONDS = 2.0


class DatabaseUnavailable(AppError):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    code = "database_unavailable"
    detail = "Not ready: the database did not answer."


async def check_database(engine: AsyncEngine, deadline: float = READY_TIMEOUT_SECONDS) -> None:
    """Run `SELECT 1` within `deadline` seconds, or raise `DatabaseUnavailable`."""
    try:
        async with asyncio.timeout(deadline):
            async with engine.connect() as connection:
                await connection.execute(text("SELECT 1"))
    except Exception as exc:
        # Only the type: a driver's message may carry the connection string.
        logger.warning("readiness check: database failed (%s)", type(exc).__name__)
        raise DatabaseUnavailable(
            f"Not ready: the database did not answer within {deadline:g} seconds."
        ) from exc
