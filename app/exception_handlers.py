"""The handlers that render every error the app can produce as JSON `{"detail", "code"}`,
and the classification of database errors into "unavailable" (503) and "our bug" (500)."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy import exc as sqlalchemy_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from app.errors import AppError

# The logger name the handlers have always logged under (dashboards and alerts filter on it).
logger = logging.getLogger("app.errors")


def _json(
    status_code: int, body: dict[str, Any], headers: Mapping[str, str] | None = None
) -> JSONResponse:
    return JSONResponse(jsonable_encoder(body), status_code=status_code, headers=headers)


async def _app_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, AppError)
    body: dict[str, Any] = {"detail": exc.detail, "code": exc.code}
    errors = getattr(exc, "errors", None)
    if errors is not None or exc.status_code == 422:
        body["errors"] = errors or []
    return _json(exc.status_code, body, exc.response_headers())


_HTTP_CODES = {
    404: "not_found",
    405: "method_not_allowed",
    413: "payload_too_large",
}


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    if exc.status_code == 400:
        # FastAPI and Starlette answer 400 when a body cannot be decoded at all (bytes that
        # are not UTF-8, a broken multipart form): to a caller that is one more malformed
        # body, answered like every other one.
        return _json(
            422,
            {
                "detail": "Invalid request: body: the body could not be decoded.",
                "code": "validation_error",
                "errors": [{"loc": ["body"], "msg": "Undecodable body", "type": "body_invalid"}],
            },
        )
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    detail = exc.detail if isinstance(exc.detail, str) else "Request failed."
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(headers or {}), "Allow": ", ".join(_allowed_methods(request))}
    return _json(exc.status_code, {"detail": detail, "code": code}, headers)


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> list[str]:
    """Every method the path answers. Starlette's 405 names only the first route that
    matched the path, and FastAPI makes one route per method (GET /images, DELETE /images):
    each method is tried against the app's routes instead."""
    routes = request.app.router.routes
    allowed = []
    for method in _METHODS:
        scope = {**request.scope, "method": method}
        if any(route.matches(scope)[0] is Match.FULL for route in routes):
            allowed.append(method)
    return allowed


def _clean_validation_errors(errors: Any) -> list[dict[str, Any]]:
    # The raw input and pydantic's internal context can be large or hold secrets
    # (a password that failed validation); a caller needs the place and the reason.
    cleaned = []
    for error in errors:
        cleaned.append(
            {"loc": list(error.get("loc", ())), "msg": error.get("msg"), "type": error.get("type")}
        )
    return cleaned


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = _clean_validation_errors(exc.errors())
    first = errors[0] if errors else None
    detail = "Invalid request."
    if first is not None:
        where = ".".join(str(part) for part in first["loc"])
        detail = f"Invalid request: {where or 'body'}: {first['msg']}"
    return _json(422, {"detail": detail, "code": "validation_error", "errors": errors})


async def _database_unavailable(_: Request, exc: Exception) -> JSONResponse:
    logger.error("database unavailable: %s", type(exc).__name__)
    return _json(
        503,
        {
            "detail": "The database is unavailable; try again shortly.",
            "code": "database_unavailable",
        },
        {"Retry-After": "1"},
    )


async def _unexpected_error(_: Request, exc: Exception) -> JSONResponse:
    logger.exception("unhandled error", exc_info=exc)
    return _json(500, {"detail": "Internal server error.", "code": "internal_error"})


# SQLSTATE classes that mean "the database cannot serve us right now", not "our query is
# wrong": 08 connection exception, 53 insufficient resources (too many connections, out of
# memory or disk), 57P0x shutdown, crash or start-up in progress.
_UNAVAILABLE_SQLSTATE_PREFIXES = ("08", "53", "57P")


async def _database_error(request: Request, exc: Exception) -> JSONResponse:
    """A driver error SQLAlchemy did not classify as operational (asyncpg's connect-time
    "too many clients" or "starting up" arrive as a plain DBAPIError): 503 when its SQLSTATE
    says the server is unavailable, a 500 otherwise."""
    assert isinstance(exc, sqlalchemy_exc.DBAPIError)
    sqlstate = getattr(exc.orig, "sqlstate", None) or getattr(exc.orig, "pgcode", None)
    if exc.connection_invalidated or (
        isinstance(sqlstate, str) and sqlstate.startswith(_UNAVAILABLE_SQLSTATE_PREFIXES)
    ):
        return await _database_unavailable(request, exc)
    return await _unexpected_error(request, exc)


def install_error_handlers(app: FastAPI) -> None:
    """Render every error the app can produce as JSON with `detail` and `code`."""
    app.add_exception_handler(AppError, _app_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    for database_error in (
        sqlalchemy_exc.OperationalError,
        sqlalchemy_exc.InterfaceError,
        sqlalchemy_exc.TimeoutError,
        # asyncpg's connect() raises the socket's own error (ConnectionRefusedError,
        # TimeoutError, another OSError) unwrapped by SQLAlchemy. Outbound HTTP errors are
        # caught by the image check, so an OSError reaching here comes from the database.
        OSError,
    ):
        app.add_exception_handler(database_error, _database_unavailable)
    app.add_exception_handler(sqlalchemy_exc.DBAPIError, _database_error)
    app.add_exception_handler(Exception, _unexpected_error)
