"""Swagger UI and ReDoc served from the app itself: no CDN, works offline and under a CSP.

The JavaScript and CSS come from the `fastapi-offline` package (pinned in pyproject.toml),
which ships the Swagger UI and ReDoc bundles; our own `swagger-init.js` starts Swagger UI so
the pages carry no inline script.
"""

from __future__ import annotations

import html
import json
from importlib import resources
from pathlib import Path
from typing import Any

from fastapi import APIRouter, FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, Response

from app.errors import ErrorBody, NotFound, ValidationErrorBody

ASSETS_PATH = "/docs/assets"
# ReDoc's bundle fetches its "powered by" logo from Redocly's CDN; it is served with that
# one URL pointing at our own icon instead, so the page makes no outside request at all.
REDOC_CDN_LOGO = b"https://cdn.redoc.ly/redoc/logo-mini.svg"
_OWN_STATIC = Path(__file__).resolve().parent / "static"


def _bundled_static() -> Path:
    return Path(str(resources.files("fastapi_offline") / "static"))


def _asset_files() -> dict[str, Path]:
    bundled = _bundled_static()
    files = {
        "swagger-ui-bundle.js": bundled / "swagger-ui-bundle.js",
        "swagger-ui.css": bundled / "swagger-ui.css",
        "redoc.standalone.js": bundled / "redoc.standalone.js",
        "favicon.png": bundled / "favicon.png",
        "swagger-init.js": _OWN_STATIC / "swagger-init.js",
    }
    missing = [str(path) for path in files.values() if not path.is_file()]
    if missing:
        raise RuntimeError(f"docs assets missing: {', '.join(missing)}")
    return files


def _page(title: str, head: str, body: str) -> str:
    return f"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{html.escape(title)}</title>
<link rel="icon" type="image/png" href="{ASSETS_PATH}/favicon.png">
{head}
</head>
<body>
{body}
</body>
</html>
"""


def docs_router(app: FastAPI) -> APIRouter:
    """Routes for `/docs`, `/redoc` and their assets (an allow-list of files, nothing else)."""
    files = _asset_files()
    redoc_js = files.pop("redoc.standalone.js").read_bytes()
    redoc_js = redoc_js.replace(REDOC_CDN_LOGO, f"{ASSETS_PATH}/favicon.png".encode())
    router = APIRouter(include_in_schema=False)
    openapi_url = html.escape(app.openapi_url or "/openapi.json", quote=True)

    @router.get("/docs")
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = html.escape(request.scope.get("root_path", ""), quote=True)
        return HTMLResponse(
            _page(
                f"{app.title} - Swagger UI",
                f'<link rel="stylesheet" href="{root}{ASSETS_PATH}/swagger-ui.css">',
                f'<div id="swagger-ui" data-openapi-url="{root}{openapi_url}"></div>\n'
                f'<script src="{root}{ASSETS_PATH}/swagger-ui-bundle.js"></script>\n'
                f'<script src="{root}{ASSETS_PATH}/swagger-init.js"></script>',
            )
        )

    @router.get("/redoc")
    async def redoc(request: Request) -> HTMLResponse:
        root = html.escape(request.scope.get("root_path", ""), quote=True)
        return HTMLResponse(
            _page(
                f"{app.title} - ReDoc",
                "",
                f'<redoc spec-url="{root}{openapi_url}"></redoc>\n'
                f'<script src="{root}{ASSETS_PATH}/redoc.standalone.js"></script>',
            )
        )

    cache = {"Cache-Control": "public, max-age=86400"}

    @router.get(ASSETS_PATH + "/{name}", response_model=None)
    async def asset(name: str) -> FileResponse | Response:
        if name == "redoc.standalone.js":
            return Response(redoc_js, media_type="text/javascript", headers=cache)
        path = files.get(name)
        if path is None:
            raise NotFound("No such docs asset.")
        return FileResponse(path, headers=cache)

    return router


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


def install_openapi(app: FastAPI) -> None:
    """Make the app's OpenAPI document include `document_common_responses` (built once)."""
    generate_openapi = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = document_common_responses(generate_openapi())
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
