"""The error model: `AppError` and its generic kinds (each domain's own errors subclass them in
its `errors.py`), the error body models, and the OpenAPI `responses` they document.

The handlers that render errors live in `app.exception_handlers`."""

from __future__ import annotations

from typing import Any, ClassVar

from fastapi import status
from pydantic import BaseModel


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


class Forbidden(AppError):
    status_code = status.HTTP_403_FORBIDDEN
    code = "forbidden"
    detail = "You may not do this."


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
