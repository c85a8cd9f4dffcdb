"""The gateway: one pure-ASGI layer for request ids and the access log, metrics, security
headers, proxies, hosts, body size limits and trailing slashes.

Pure ASGI rather than `BaseHTTPMiddleware`: no task or stream per request, and the request
stays in the handler's context (so the request id reaches every log line). One layer rather
than one per concern: each layer cost a call, a send wrapper and a header scan per request
(docs/performance.md, "Our overhead against the framework floor").
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import time
from collections.abc import Iterable

from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.config import Settings
from app.ops.logs import request_id_var
from app.ops.metrics import Metrics
from app.ops.proxies import is_trusted, scope_from_trusted_peer

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


class HostCheck:
    """ALLOWED_HOSTS: `*` allows any host; `*.example.com` allows its subdomains."""

    def __init__(self, allowed_hosts: Iterable[str]) -> None:
        self.allowed = [host.lower() for host in allowed_hosts]
        self.allow_any = "*" in self.allowed
        # A busy server sees the same few Host values all day: each is judged once.
        self._judged: dict[bytes, bool] = {}

    def host_allowed(self, host: str) -> bool:
        host = host.lower()
        for pattern in self.allowed:
            if host == pattern or (pattern.startswith("*.") and host.endswith(pattern[1:])):
                return True
        return False

    def allows(self, header: bytes | None) -> bool:
        """Whether a request with this raw Host header (port included) may be served."""
        if self.allow_any:
            return True
        key = header or b""
        judged = self._judged.get(key)
        if judged is None:
            host = key.decode("latin-1")
            # Drop the port; keep IPv6 literals ([::1]:8000) whole up to their bracket.
            name = host.rsplit(":", 1)[0] if host.count(":") == 1 or "]:" in host else host
            judged = self.host_allowed(name)
            if len(self._judged) < _HOSTS_REMEMBERED:  # a bound against made-up hosts
                self._judged[key] = judged
        return judged


_HOSTS_REMEMBERED = 64
_PEERS_REMEMBERED = 4096
_SECURITY_HEADERS = (
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
)
# Built once per process, not per response.
API_SECURITY_HEADERS = (*_SECURITY_HEADERS, (b"content-security-policy", API_CSP.encode()))
DOCS_SECURITY_HEADERS = (*_SECURITY_HEADERS, (b"content-security-policy", DOCS_CSP.encode()))
_REQUEST_ID_NAME = REQUEST_ID_HEADER.lower().encode()


def with_gateway_headers(
    headers: Iterable[tuple[bytes, bytes]],
    request_id: tuple[bytes, bytes],
    security: tuple[tuple[bytes, bytes], ...],
) -> list[tuple[bytes, bytes]]:
    """A response's headers with the request id (replacing any) and every security header
    the response did not set itself (a page's own CSP wins)."""
    result = list(headers)
    present = {name.lower() for name, _ in result}
    if _REQUEST_ID_NAME in present:
        result = [header for header in result if header[0].lower() != _REQUEST_ID_NAME]
    result.append(request_id)
    result.extend(header for header in security if header[0] not in present)
    return result


def request_id_from_raw(given: bytes | None, new_ids: random.Random | None = None) -> str:
    """The caller's X-Request-ID when it is well-formed, otherwise a new one (32 hex digits).

    A request id correlates lines; it guards nothing, so new ones come from a generator
    seeded once from the system's randomness rather than a system call per request."""
    if given:
        text = given.decode("latin-1")
        if _VALID_REQUEST_ID.fullmatch(text):
            return text
    if new_ids is None:
        return os.urandom(16).hex()
    return f"{new_ids.getrandbits(128):032x}"


class GatewayMiddleware:
    """Everything operators rely on, in one pure-ASGI layer (it was six, each an extra call,
    send wrapper and header scan per request):

    - the client and scheme TRUSTED_PROXIES vouches for (`app.ops.proxies`);
    - a request id from `X-Request-ID` (validated) or generated, returned on every response
      and set in the context variable the log filter reads;
    - `X-Content-Type-Options`, `Referrer-Policy`, `X-Frame-Options` and a CSP on every
      answer that did not set its own;
    - 413 `payload_too_large` for bodies over MAX_BODY_BYTES (a declared `Content-Length`
      before anything is read, a chunked body as soon as it passes the limit);
    - 400 `invalid_host` unless the Host is in ALLOWED_HOSTS (health probes exempt:
      orchestrators call them by container address);
    - `/path/` answered exactly like `/path` (older clients call `/accounts/register/`; a
      307 would make them resend their POST);
    - one access-log line and the request metrics per request, and unhandled errors
      rendered as JSON 500.

    Every answer, the 400 and 413 above included, carries the request id, the security
    headers, a log line and a count.
    """

    def __init__(self, app: ASGIApp, settings: Settings, metrics: Metrics | None) -> None:
        self.app = app
        self.metrics = metrics
        self.trusted = tuple(settings.trusted_proxy_networks)
        self.hosts = HostCheck(settings.allowed_hosts)
        self.max_body_bytes = settings.max_body_bytes
        self.too_large = PAYLOAD_TOO_LARGE_DETAIL.format(limit=settings.max_body_bytes)
        # Made in each worker (the app is built per process): no two share a sequence.
        self._new_ids = random.Random(os.urandom(32))  # noqa: S311 (ids, not secrets)
        self._peers: dict[str, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.trusted and scope["type"] in ("http", "websocket") and self._trusted_peer(scope):
            scope = scope_from_trusted_peer(scope, self.trusted)
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given_id = host = declared = None
        for name, value in scope["headers"]:
            if name == b"x-request-id":
                given_id = value
            elif name == b"host":
                host = value
            elif name == b"content-length":
                declared = value
        request_id = request_id_from_raw(given_id, self._new_ids)
        path: str = scope["path"]
        security = DOCS_SECURITY_HEADERS if path.startswith(DOCS_PATHS) else API_SECURITY_HEADERS
        id_header = (_REQUEST_ID_NAME, request_id.encode())
        token = request_id_var.set(request_id)
        started = time.perf_counter()
        status = 500
        response_started = False

        async def send_with_headers(message: Message) -> None:
            nonlocal status, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                message["headers"] = with_gateway_headers(
                    message.get("headers", ()), id_header, security
                )
            await send(message)

        try:
            await self._serve(scope, receive, send_with_headers, path, host, declared)
        except Exception:
            error_logger.exception("unhandled error")
            if response_started:
                raise
            await _send_json_error(
                send_with_headers, 500, "internal_error", "Internal server error."
            )
        finally:
            self._finish(scope, path, status, time.perf_counter() - started)
            request_id_var.reset(token)

    def _trusted_peer(self, scope: Scope) -> bool:
        """Whether the peer is one of TRUSTED_PROXIES; judged once per address (parsing it
        with `ipaddress` on every request cost more than the rest of the proxy rule)."""
        peer = scope.get("client")
        if peer is None:
            return False
        verdict = self._peers.get(peer[0])
        if verdict is None:
            verdict = is_trusted(peer[0], self.trusted)
            if len(self._peers) < _PEERS_REMEMBERED:  # a bound against many clients
                self._peers[peer[0]] = verdict
        return verdict

    async def _serve(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        path: str,
        host: bytes | None,
        declared: bytes | None,
    ) -> None:
        if declared is not None and _declared_length(declared) > self.max_body_bytes:
            await _send_json_error(
                send, 413, "payload_too_large", self.too_large, (b"connection", b"close")
            )
            return
        if not self.hosts.allows(host) and not path.startswith("/health/"):
            await _send_json_error(send, 400, "invalid_host", "Invalid host header.")
            return
        if len(path) > 1 and path.endswith("/"):
            # Changed in place (as Starlette's router does) so the log and metrics see the
            # matched route the router records in this same scope.
            scope["path"] = path.rstrip("/") or "/"
            raw_path = scope.get("raw_path")
            if raw_path:
                scope["raw_path"] = raw_path.rstrip(b"/") or b"/"
        await self.app(scope, self._counting(receive), send)

    def _counting(self, receive: Receive) -> Receive:
        """`receive` that refuses a body as soon as it passes MAX_BODY_BYTES (a body sent
        without a `Content-Length`, or one longer than declared)."""
        received = 0

        async def counting_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:
                    # Rendered by the app's HTTPException handler as JSON with its code.
                    raise StarletteHTTPException(413, detail=self.too_large)
            return message

        return counting_receive

    def _finish(self, scope: Scope, path: str, status: int, seconds: float) -> None:
        route = route_template(scope)
        method: str = scope["method"]
        if self.metrics is not None:
            self.metrics.observe_request(method, route, status, seconds)
        quiet = path.startswith(_QUIET_PATHS) and status < 500
        level = logging.DEBUG if quiet else logging.INFO
        if access_logger.isEnabledFor(level):
            client = scope.get("client")
            # `makeRecord` and `handle` rather than `log`: the same record and handlers,
            # without `findCaller` walking the stack for a file and line the line never shows.
            record = access_logger.makeRecord(
                access_logger.name,
                level,
                __file__,
                0,
                "%s %s %s %.1fms",
                (method, scope["path"], status, seconds * 1000),
                None,
                extra={
                    "method": method,
                    "route": route,
                    "path": scope["path"],
                    "status": status,
                    "duration_ms": round(seconds * 1000, 2),
                    "client": client[0] if client else None,
                },
            )
            access_logger.handle(record)


def _declared_length(value: bytes) -> int:
    try:
        return int(value)
    except ValueError:
        return -1


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


PAYLOAD_TOO_LARGE_DETAIL = "The request body is larger than {limit} bytes."


def install_middleware(app: FastAPI, settings: Settings, metrics: Metrics | None) -> None:
    """Add the middleware: CORS when configured, inside the one gateway layer (so a
    preflight answer also carries the request id, the security headers and a log line)."""
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["GET", "POST", "PATCH", "DELETE"],
            allow_headers=["Authorization", "Content-Type", REQUEST_ID_HEADER],
            expose_headers=[REQUEST_ID_HEADER],
        )
    app.add_middleware(GatewayMiddleware, settings=settings, metrics=metrics)
