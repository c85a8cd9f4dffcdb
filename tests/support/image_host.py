"""A real HTTP image host on 127.0.0.1 for the URL-check tests: nothing leaves loopback."""

from __future__ import annotations

import io
import ssl
import threading
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from PIL import Image as PILImage


def make_image(fmt: str, size: tuple[int, int] = (3, 2)) -> bytes:
    """Real image bytes of the given Pillow format (PNG, JPEG, GIF, WEBP, BMP)."""
    buffer = io.BytesIO()
    PILImage.new("RGB", size, (200, 30, 30)).save(buffer, format=fmt)
    return buffer.getvalue()


Route = Callable[[BaseHTTPRequestHandler], None]


def _static(status: int, body: bytes, headers: dict[str, str]) -> Route:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        for name, value in headers.items():
            handler.send_header(name, value)
        if "Content-Length" not in headers:
            handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command != "HEAD":
            handler.wfile.write(body)

    return handle


class _CountingServer(ThreadingHTTPServer):
    """Counts every TCP connection it accepts, before any request is read from it."""

    connections = 0

    def verify_request(self, request: Any, client_address: Any) -> bool:
        self.connections += 1
        return True


class ImageHost:
    """Serves fixed routes; records every connection and request it receives."""

    def __init__(self, host: str = "127.0.0.1", tls: ssl.SSLContext | None = None) -> None:
        self.requests: list[tuple[str, str]] = []
        self.host_headers: list[str] = []
        self.routes: dict[str, Route] = {}
        self.slow_seconds = 3.0
        host_ref = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _dispatch(self) -> None:
                path = self.path.split("?", 1)[0]
                host_ref.requests.append((self.command, path))
                host_ref.host_headers.append(self.headers.get("Host", ""))
                route = host_ref.routes.get(path)
                if route is None:
                    _static(404, b"not found", {"Content-Type": "text/plain"})(self)
                else:
                    route(self)

            do_GET = _dispatch  # noqa: N815
            do_HEAD = _dispatch  # noqa: N815

            def log_message(self, format: str, *args: object) -> None:
                pass

        # Concurrency tests open dozens of connections at once; the default backlog of 5
        # would drop SYNs and turn them into retries past the check's deadline.
        _CountingServer.request_queue_size = 256
        self._server = _CountingServer((host, 0), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        self.base_url = f"http://{host}:{self.port}"
        self.server_names: list[str | None] = []  # the TLS SNI each client sent
        if tls is not None:

            def record_server_name(_: Any, server_name: str | None, __: Any) -> None:
                self.server_names.append(server_name)

            tls.sni_callback = record_server_name
            self._server.socket = tls.wrap_socket(self._server.socket, server_side=True)
            self.base_url = f"https://{host}:{self.port}"
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._install_default_routes()

    def _install_default_routes(self) -> None:
        png = make_image("PNG")
        self.png_bytes = png
        self.add("/cat.png", 200, png, {"Content-Type": "image/png"})
        self.add(
            "/photo.jpg", 200, make_image("JPEG"), {"Content-Type": "IMAGE/JPEG; charset=binary"}
        )
        self.add("/anim.gif", 200, make_image("GIF"), {"Content-Type": "image/gif"})
        self.add("/page.html", 200, b"<html><body>hi</body></html>", {"Content-Type": "text/html"})
        self.add(
            "/image.svg",
            200,
            b"<svg xmlns='http://www.w3.org/2000/svg'/>",
            {"Content-Type": "image/svg+xml"},
        )
        self.add("/gone.png", 404, b"gone", {"Content-Type": "text/plain"})
        self.add("/error.png", 500, b"oops", {"Content-Type": "text/plain"})
        self.add("/no-type", 200, png, {})
        self.add("/moved.png", 302, b"", {"Location": "/cat.png"})

        def slow(handler: BaseHTTPRequestHandler) -> None:
            time.sleep(self.slow_seconds)
            _static(200, png, {"Content-Type": "image/png"})(handler)

        self.routes["/slow.png"] = slow

    @property
    def connections(self) -> int:
        """TCP connections accepted so far, whether or not a request followed."""
        return self._server.connections

    def forget(self) -> None:
        """Start a test with empty records."""
        self.requests.clear()
        self.host_headers.clear()
        self._server.connections = 0

    def add(self, path: str, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.routes[path] = _static(status, body, headers)

    def url(self, path: str) -> str:
        return self.base_url + path

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class LoopbackResolver:
    """The tests' DNS: `localhost` is 127.0.0.1 and every other name fails to resolve, so
    no lookup ever leaves the machine (the system resolver's server is not on loopback)."""

    async def resolve(self, host: str, port: int) -> list[str]:
        if host.rstrip(".").lower() in ("localhost", "localhost.localdomain"):
            return ["127.0.0.1"]
        from app.images.errors import ImageUrlUnreachable

        raise ImageUrlUnreachable(
            "The image URL's host name could not be resolved; check the address."
        )
