"""A host's absurd size claims are stored as unknown, never a server error (an absurd
Content-Length is refused by the HTTP client itself, as an unreachable host)."""

from __future__ import annotations

from http.server import BaseHTTPRequestHandler

import httpx

from tests.support.helpers import sign_up
from tests.support.image_host import ImageHost, make_image

ABSURD = "9" * 30


async def test_absurd_content_range_total_is_stored_as_unknown(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    png = make_image("PNG")

    def huge(handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "HEAD":
            handler.send_response(200)
            # No size here: the ranged GET's Content-Range total is all the check learns.
            handler.send_header("Content-Type", "image/png")
            handler.end_headers()
            return
        handler.send_response(206)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Range", f"bytes 0-{len(png) - 1}/{ABSURD}")
        handler.send_header("Content-Length", str(len(png)))
        handler.end_headers()
        handler.wfile.write(png)

    image_host.routes["/huge.png"] = huge
    alice = await sign_up(client, "alice")
    response = await client.post(
        f"/users/{alice.id}/images",
        json={"image_url": image_host.url("/huge.png")},
        headers=alice.headers,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == "image/png"
    assert body["size_bytes"] is None
    stored = await client.get(f"/users/{alice.id}/images/{body['id']}")
    assert stored.json()["size_bytes"] is None
