"""Pure ASGI middleware: request ids and the access log, metrics, security headers, hosts,
body size limits and trailing slashes; `install_middleware` adds them in order.

Plain ASGI classes rather than `BaseHTTPMiddleware`: they add no task or stream per request
and keep the request in the handler's context (so the request id reaches every log line).
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.datastructures import Headers, MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.ops.logs import request_id_var
from app.ops.metrics import Metrics
from app.ops.proxies import ProxyHeadersMiddleware

access_logger = logging.getLogger("app.access")
error_logger = logging.getLogger("app.errors")

REQUEST_ID_HEADER = "X-Request-ID"
# Ids from the proxy or a client are kept only when short and plain: no log injection.
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}$")
# Probes and scrapes would drown the access log; they are logged at DEBUG only.
_QUIET_PATHS = ("/health/", "/metrics")
UNMATCHED_ROUTE = "unmatched"

# The docs pages run Swagger UI and ReDoc from our own origin: scripts only from files we
# serve, inline styles (both libraries set them), images from data: URIs, ReDoc's search in
# a blob: worker. Everything else answers JSON and may load nothing at all.
DOCS_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; font-src 'self' data:; worker-src 'self' blob:; "
    "connect-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
API_CSP = "default-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
DOCS_PATHS = ("/docs", "/redoc")


def request_id_from(headers: Headers) -> str:
    """The caller's X-Request-ID when it is well-formed, otherwise a new one."""
    given = headers.get(REQUEST_ID_HEADER)
    if given and _VALID_REQUEST_ID.fullmatch(given):
        return given
    return uuid.uuid4().hex


def route_template(scope: Scope) -> str:
    """The matched route's template (`/users/{user_id}`), never the raw path."""
    path = getattr(scope.get("route"), "path", None)
    if path is None and "endpoint" in scope:
        # Plain Starlette routes (FastAPI's /openapi.json) record only their endpoint.
        endpoint = scope["endpoint"]
        for route in getattr(scope.get("app"), "routes", ()):
            if getattr(route, "endpoint", None) is endpoint:
                path = getattr(route, "path", None)
                break
    return path if isinstance(path, str) else UNMATCHED_ROUTE


class RequestContextMiddleware:
    """Give each request an id, log it once, count it, and render unhandled errors as JSON.

    The id comes from `X-Request-ID` (validated) or is generated; it is returned on every
    response and set in a context variable that the log filter reads.
    """

    def __init__(self, app: ASGIApp, metrics: Metrics | None = None) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = request_id_from(Headers(scope=scope))
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_logger.exception("unhandled error")
            if response_started:
                raise
            await _send_json_error(
                send,
                500,
                "internal_error",
                "Internal server error.",
                (REQUEST_ID_HEADER.lower().encode(), request_id.encode()),
            )
        finally:
            self._finish(scope, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _finish(self, scope: Scope, status: int, seconds: float) -> None:
        route = route_template(scope)
        method: str = scope["method"]
        if self.metrics is not None:
            self.metrics.observe_request(method, route, status, seconds)
        path: str = scope["path"]
        quiet = path.startswith(_QUIET_PATHS) and status < 500
        level = logging.DEBUG if quiet else logging.INFO
        if access_logger.isEnabledFor(level):
            client = scope.get("client")
            access_logger.log(
                level,
                "%s %s %s %.1fms",
                method,
                path,
                status,
                seconds * 1000,
                extra={
                    "method": method,
                    "route": route,
                    "path": path,
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None,
                },
            )


async def _send_json_error(
    send: Send, status: int, code: str, detail: str, *extra_headers: tuple[bytes, bytes]
) -> None:
    """Answer `{"detail", "code"}` straight from middleware, where the app's exception
    handlers cannot be reached (before routing, or after the app has failed)."""
    body = json.dumps({"detail": detail, "code": code}).encode()
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class SecurityHeadersMiddleware:
    """`X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options` and a CSP on every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        policy = DOCS_CSP if path.startswith(DOCS_PATHS) else API_CSP

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                headers.setdefault("X-Content-Type-Options", "nosniff")
                headers.setdefault("Referrer-Policy", "no-referrer")
                headers.setdefault("X-Frame-Options", "DENY")
                headers.setdefault("Content-Security-Policy", policy)
            await send(message)

        await self.app(scope, receive, send_with_headers)


class TrustedHostMiddleware:
    """Answer 400 `invalid_host` unless the Host header is in ALLOWED_HOSTS.

    `*` allows any host; `*.example.com` allows its subdomains. Health probes are exempt:
    orchestrators call them by container address, not by the public name.
    """

    def __init__(self, app: ASGIApp, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = [host.lower() for host in allowed_hosts]
        self.allow_any = "*" in self.allowed

    def host_allowed(self, host: str) -> bool:
        host = host.lower()
        for pattern in self.allowed:
            if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.allow_any or scope["type"] != "http" or scope["path"].startswith("/health/"):
            await self.app(scope, receive, send)
            return
        host = Headers(scope=scope).get("host", "")
        # Drop the port; keep IPv6 literals ([::1]:8000) whole up to their bracket.
        name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]:" in host else host
        if self.host_allowed(name):
            await self.app(scope, receive, send)
            return
        await _send_json_error(send, 400, "invalid_host", "Invalid host header.")


PAYLOAD_TOO_LARGE_DETAIL = "The request body is larger than {limit} bytes."


class BodySizeLimit:
    """Refuse request bodies larger than `max_bytes` with 413 `payload_too_large`.

    A declared `Content-Length` over the limit is refused before anything is read; a body
    without one (chunked, or a lying header) is counted as it arrives and refused as soon as
    it passes the limit, so a 10 MB upload never sits in memory whole.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        detail = PAYLOAD_TOO_LARGE_DETAIL.format(limit=self.max_bytes)
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await _send_json_error(
                send, 413, "payload_too_large", detail, (b"connection", b"close")
            )
            return
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_bytes:
                    # Rendered by the app's HTTPException handler as JSON with its code.
                    raise StarletteHTTPException(413, detail=detail)
            return message

        await self.app(scope, counting_receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope.get("headers", ()):
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


class StripTrailingSlash:
    """Answer `/path/` exactly like `/path`, without a redirect: older clients call
    `/accounts/register/`, and a 307 would make them resend their POST."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if len(path) > 1 and path.endswith("/"):
                # Changed in place (as Starlette's router does) so the outer middleware sees
                # the matched route the router records in this same scope.
                scope["path"] = path.rstrip("/") or "/"
                raw_path = scope.get("raw_path")
                if raw_path:
                    scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, receive, send)


def install_middleware(app: FastAPI, settings: Settings, metrics: Metrics | None) -> None:
    """Add every middleware; a request meets them from the last added to the first."""
    app.add_middleware(StripTrailingSlash)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(TrustedHostMiddleware, allowed_hosts=settings.allowed_hosts)
    # Inside the request context and the security headers: a 413 carries the request id,
    # the headers and an access-log line like every other answer.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(RequestContextMiddleware, metrics=metrics)
    app.add_middleware(SecurityHeadersMiddleware)
    # Outermost: everything inside sees the client TRUSTED_PROXIES vouches for.
    app.add_middleware(ProxyHeadersMiddleware, trusted=settings.trusted_proxy_networks)
