"""Domain errors and the handlers that render every error as `{"detail", "code"}`."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from typing import Any, ClassVar

from fastapi import FastAPI, Request, status
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import exc as sqlalchemy_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

logger = logging.getLogger(__name__)


class AppError(Exception):
    """An error a caller can act on: it carries its HTTP status and a stable code."""

    status_code: ClassVar[int] = status.HTTP_400_BAD_REQUEST
    code: str = "bad_request"
    detail: str = "The request could not be processed."
    headers: ClassVar[dict[str, str] | None] = None

    def __init__(self, detail: str | None = None, *, code: str | None = None) -> None:
        if detail is not None:
            self.detail = detail
        if code is not None:
            self.code = code
        super().__init__(self.detail)

    def response_headers(self) -> dict[str, str] | None:
        """Headers to send with the error (a subclass may compute them per instance)."""
        return self.headers


class NotAuthenticated(AppError):
    status_code = status.HTTP_401_UNAUTHORIZED
    code = "not_authenticated"
    detail = "Authentication is required: send `Authorization: Bearer <token>`."
    headers: ClassVar[dict[str, str] | None] = {"WWW-Authenticate": "Bearer"}


class InvalidToken(NotAuthenticated):
    code = "invalid_token"
    detail = "The access token is invalid or has expired."


class InvalidCredentials(NotAuthenticated):
    code = "invalid_credentials"
    detail = "Incorrect login or password."


class InactiveAccount(NotAuthenticated):
    code = "inactive_account"
    detail = "This account is deactivated."


class Forbidden(AppError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"
    detail = "You may not do this."


class AdminRequired(Forbidden):
    code = "admin_required"
    detail = "This operation is for administrators."


class NotFound(AppError):
    status_code = status.HTTP_404_NOT_FOUND
    code = "not_found"
    detail = "Not found."


class Conflict(AppError):
    status_code = status.HTTP_409_CONFLICT
    code = "conflict"
    detail = "This conflicts with data that already exists."


class InvalidInput(AppError):
    status_code = status.HTTP_422_UNPROCESSABLE_CONTENT
    code = "validation_error"
    detail = "The request is not valid."


class ErrorBody(BaseModel):
    """The body of every error response."""

    detail: str
    code: str


class ValidationErrorBody(ErrorBody):
    """A validation error also lists what was wrong with each field."""

    errors: list[dict[str, Any]]


def error_responses(*errors: type[AppError]) -> dict[int | str, dict[str, Any]]:
    """OpenAPI `responses` for a route, from the domain errors it can raise."""
    by_status: dict[int, list[type[AppError]]] = {}
    for error in errors:
        by_status.setdefault(error.status_code, []).append(error)
    responses: dict[int | str, dict[str, Any]] = {}
    for status_code, group in sorted(by_status.items()):
        codes = ", ".join(f"`{error.code}`" for error in group)
        model: type[BaseModel] = ValidationErrorBody if status_code == 422 else ErrorBody
        responses[status_code] = {"model": model, "description": f"Error codes: {codes}"}
    return responses


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


_COMMON_RESPONSES: dict[str, tuple[str, str]] = {
    "413": ("payload_too_large", "The request body is larger than `MAX_BODY_BYTES`."),
    "503": ("database_unavailable", "The database could not be reached; retry shortly."),
}


def document_common_responses(schema: dict[str, Any]) -> dict[str, Any]:
    """Add the answers any operation can give to its OpenAPI `responses`: 503 when the
    database is down, and 413 when it takes a body and the body is too large."""
    error_schema = {"$ref": "#/components/schemas/ErrorBody"}
    validation_schema = {"$ref": "#/components/schemas/ValidationErrorBody"}
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    components.setdefault("ErrorBody", ErrorBody.model_json_schema())
    components.setdefault(
        "ValidationErrorBody",
        ValidationErrorBody.model_json_schema(ref_template="#/components/schemas/{model}"),
    )
    for path_item in schema.get("paths", {}).values():
        for operation in path_item.values():
            responses = operation.setdefault("responses", {})
            if operation.get("parameters") or "requestBody" in operation:
                # FastAPI documents its own 422 shape; ours is `ValidationErrorBody`.
                description = responses.get("422", {}).get("description", "Validation Error")
                if description == "Validation Error":  # FastAPI's own
                    description = "Error codes: `validation_error`"
                responses["422"] = {
                    "description": description,
                    "content": {"application/json": {"schema": validation_schema}},
                }
            for status_code, (code, meaning) in _COMMON_RESPONSES.items():
                if status_code == "413" and "requestBody" not in operation:
                    continue
                responses.setdefault(
                    status_code,
                    {
                        "description": f"{meaning} Error codes: `{code}`",
                        "content": {"application/json": {"schema": error_schema}},
                    },
                )
    for unused in ("HTTPValidationError", "ValidationError"):
        if f'"#/components/schemas/{unused}"' not in json.dumps(schema):
            components.pop(unused, None)
    return schema
