"""Operations endpoints: liveness, readiness and Prometheus metrics (not in the API schema)."""

from __future__ import annotations

from typing import Literal

from fastapi import APIRouter, Request, Response
from pydantic import BaseModel

from app.errors import NotFound, error_responses
from app.ops import health
from app.ops.metrics import metrics_client_allowed
from app.state import StateDep

router = APIRouter(tags=["operations"], include_in_schema=False)
metrics_router = APIRouter(tags=["operations"], include_in_schema=False)


class LiveStatus(BaseModel):
    status: Literal["ok"] = "ok"


class ReadyStatus(BaseModel):
    status: Literal["ok"] = "ok"
    database: Literal["ok"] = "ok"


@router.get("/health/live", summary="Liveness", response_model=LiveStatus)
async def live() -> LiveStatus:
    """The process is up and serving; no dependency is checked."""
    return LiveStatus()


@router.get(
    "/health/ready",
    summary="Readiness",
    response_model=ReadyStatus,
    responses=error_responses(health.DatabaseUnavailable),
)
async def ready(state: StateDep) -> ReadyStatus:
    """The database answers within a short deadline; 503 `database_unavailable` otherwise."""
    await health.check_database(state.engine, health.READY_TIMEOUT_SECONDS)
    return ReadyStatus()


@metrics_router.get("/metrics", summary="Prometheus metrics")
async def metrics(request: Request, state: StateDep) -> Response:
    """Request counts and latency per route, image-check and recheck outcomes, link health,
    database pool use."""
    settings = state.settings
    client = request.client.host if request.client else None
    production = settings.environment == "production"
    if not metrics_client_allowed(client, settings.metrics_allowed_networks, production=production):
        # Hidden rather than forbidden: outsiders learn nothing about the endpoint.
        raise NotFound()
    app_metrics = state.metrics
    if app_metrics is None:  # the route is only included when metrics are on
        raise NotFound()
    await app_metrics.refresh()
    return Response(app_metrics.render(), media_type=app_metrics.content_type)
