"""Request size limits, enforced before a body is read into memory."""

from __future__ import annotations

import json

from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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
            await _send_too_large(send, detail)
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


async def _send_too_large(send: Send, detail: str) -> None:
    body = json.dumps({"detail": detail, "code": "payload_too_large"}).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 413,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
