"""The URL check against hostile URLs and hosts, end to end through the API.

Two real servers run on loopback: the usual image host on 127.0.0.1 (exempt from the guard
through IMAGE_FETCH_ALLOWED_NETWORKS=127.0.0.1/32 in the test settings) and a second one on
127.0.0.2, which stays forbidden. Whatever the URL, name, spelling, redirect or DNS answer,
the forbidden server must never see a connection. DNS is answered by a scripted resolver.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Iterator, Sequence
from http.server import BaseHTTPRequestHandler
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import func, select

from app.images.errors import ImageUrlUnreachable
from app.images.models import Image
from app.state import app_state
from tests.support.helpers import Account, assert_error, sign_up, sign_up_admin
from tests.support.image_host import ImageHost, make_image

TEST_TIMEOUT = 1.0  # IMAGE_FETCH_TIMEOUT in the test settings (tests/conftest.py)
TEN_GIB = 10 * 2**30


class ScriptedResolver:
    """DNS from a script: each name answers its lists of addresses in turn (the last one
    repeats); an unknown name does not resolve. Every lookup is recorded."""

    def __init__(self) -> None:
        self.answers: dict[str, list[list[str]]] = {}
        self.lookups: list[str] = []

    async def resolve(self, host: str, port: int) -> Sequence[str]:
        self.lookups.append(host)
        script = self.answers.get(host)
        if not script:
            raise ImageUrlUnreachable("The image URL's host name could not be resolved.")
        return script.pop(0) if len(script) > 1 else script[0]


@pytest.fixture
def image_resolver() -> ScriptedResolver:
    return ScriptedResolver()


@pytest.fixture(scope="session")
def forbidden_server() -> Iterator[ImageHost]:
    host = ImageHost("127.0.0.2")
    host.start()
    yield host
    host.stop()


@pytest.fixture
def forbidden(forbidden_server: ImageHost) -> ImageHost:
    """The server on 127.0.0.2 that must never be contacted, with empty records."""
    forbidden_server.forget()
    return forbidden_server


@pytest.fixture
def allowed(image_host: ImageHost) -> ImageHost:
    """The image host on 127.0.0.1, with empty records."""
    image_host.forget()
    return image_host


async def _image_count(app: FastAPI) -> int:
    async with app_state(app).sessionmaker() as session:
        return int((await session.execute(select(func.count()).select_from(Image))).scalar_one())


async def _add(client: httpx.AsyncClient, owner: Account, url: str) -> httpx.Response:
    return await client.post(
        f"/users/{owner.id}/images", json={"image_url": url}, headers=owner.headers
    )


def _redirect(location: str, status: int = 302) -> Any:
    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(status)
        handler.send_header("Location", location)
        handler.send_header("Content-Length", "0")
        handler.end_headers()

    return handle


def _serve(body: bytes, content_type: str, *, head_status: int | None = None) -> Any:
    """Answer GET with `body`; HEAD with the same headers, or with `head_status` alone."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        if handler.command == "HEAD" and head_status is not None:
            handler.send_response(head_status)
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", content_type)
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(body)

    return handle


# --- The forbidden server is never contacted ------------------------------------------


@pytest.mark.parametrize(
    "spelling",
    [
        "127.0.0.2",
        "2130706434",  # decimal
        "0x7f000002",  # hex
        "0177.0.0.2",  # octal
        "127.2",  # short
        "[::ffff:127.0.0.2]",  # IPv4-mapped IPv6
    ],
)
async def test_forbidden_address_in_any_spelling_gets_no_connection(
    app: FastAPI,
    client: httpx.AsyncClient,
    forbidden: ImageHost,
    image_resolver: ScriptedResolver,
    spelling: str,
) -> None:
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, f"http://{spelling}:{forbidden.port}/cat.png")
    assert_error(response, 422, "image_url_forbidden")
    assert forbidden.connections == 0
    assert forbidden.requests == []
    assert image_resolver.lookups == []  # a literal is judged as it stands, never looked up
    assert await _image_count(app) == 0


@pytest.mark.parametrize(
    "answers",
    [
        ["127.0.0.2"],
        ["::1"],
        ["127.0.0.1", "127.0.0.2"],  # ANY forbidden answer refuses the name
        ["::ffff:127.0.0.2"],
    ],
)
async def test_name_that_resolves_to_a_forbidden_address_gets_no_connection(
    app: FastAPI,
    client: httpx.AsyncClient,
    allowed: ImageHost,
    forbidden: ImageHost,
    image_resolver: ScriptedResolver,
    answers: list[str],
) -> None:
    image_resolver.answers["pics.internal"] = [answers]
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, f"http://pics.internal:{forbidden.port}/cat.png")
    body = assert_error(response, 422, "image_url_forbidden")
    for address in answers:
        assert address not in body["detail"]
    assert forbidden.connections == 0
    assert allowed.connections == 0
    assert image_resolver.lookups == ["pics.internal"]
    assert await _image_count(app) == 0


@pytest.mark.parametrize(
    "target",
    [
        "http://127.0.0.2:{port}/cat.png",
        "http://2130706434:{port}/cat.png",
        "http://0x7f000002:{port}/cat.png",
        "http://pics.internal:{port}/cat.png",
        "//127.0.0.2:{port}/cat.png",  # scheme-relative
    ],
)
async def test_redirect_to_a_forbidden_address_is_refused_before_connecting(
    app: FastAPI,
    client: httpx.AsyncClient,
    allowed: ImageHost,
    forbidden: ImageHost,
    image_resolver: ScriptedResolver,
    target: str,
) -> None:
    image_resolver.answers["pics.internal"] = [["127.0.0.2"]]
    allowed.routes["/to-forbidden"] = _redirect(target.format(port=forbidden.port))
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url("/to-forbidden"))
    assert_error(response, 422, "image_url_forbidden")
    assert allowed.requests == [("HEAD", "/to-forbidden")]
    assert forbidden.connections == 0
    assert await _image_count(app) == 0


async def test_rebinding_dns_cannot_move_the_check_to_a_forbidden_address(
    app: FastAPI,
    client: httpx.AsyncClient,
    allowed: ImageHost,
    forbidden: ImageHost,
    image_resolver: ScriptedResolver,
) -> None:
    # The first answer is allowed; every later one points at the forbidden server, which
    # serves the same paths. The check connects to what it judged, for HEAD and GET alike.
    image_resolver.answers["rebind.example"] = [["127.0.0.1"], ["127.0.0.2"]]
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, f"http://rebind.example:{allowed.port}/cat.png")
    assert response.status_code == 201, response.text
    assert allowed.requests == [("HEAD", "/cat.png"), ("GET", "/cat.png")]
    # The name is sent as Host, not the address it was pinned to.
    assert allowed.host_headers == [f"rebind.example:{allowed.port}"] * 2
    assert image_resolver.lookups == ["rebind.example"]
    assert forbidden.connections == 0


async def test_recheck_after_rebinding_is_refused_and_keeps_the_image(
    client: httpx.AsyncClient,
    allowed: ImageHost,
    forbidden: ImageHost,
    image_resolver: ScriptedResolver,
) -> None:
    image_resolver.answers["rebind.example"] = [["127.0.0.1"], ["127.0.0.2"]]
    alice = await sign_up(client, "alice")
    image = (await _add(client, alice, f"http://rebind.example:{allowed.port}/cat.png")).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    response = await client.post(f"{path}/recheck", headers=alice.headers)
    assert_error(response, 422, "image_url_forbidden")
    assert (await client.get(path)).json() == image
    assert forbidden.connections == 0


async def test_unknown_host_name_is_unreachable(
    client: httpx.AsyncClient, image_resolver: ScriptedResolver
) -> None:
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, "http://no-such-host.invalid/cat.png")
    assert_error(response, 422, "image_url_unreachable")
    assert image_resolver.lookups == ["no-such-host.invalid"]


# --- Redirects -----------------------------------------------------------------------


async def test_redirects_are_followed_up_to_the_limit(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    # Three hops (the default limit), each judged again, then the image.
    allowed.routes["/hop1"] = _redirect("/hop2", 301)
    allowed.routes["/hop2"] = _redirect(allowed.url("/hop3"), 307)
    allowed.routes["/hop3"] = _redirect("/cat.png", 308)
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url("/hop1"))
    assert response.status_code == 201, response.text
    assert response.json()["image_url"] == allowed.url("/hop1")
    assert allowed.requests == [
        ("HEAD", "/hop1"),
        ("HEAD", "/hop2"),
        ("HEAD", "/hop3"),
        ("HEAD", "/cat.png"),
        ("GET", "/cat.png"),
    ]


async def test_one_redirect_too_many_is_refused(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    for index in range(1, 5):
        allowed.routes[f"/chain{index}"] = _redirect(f"/chain{index + 1}")
    allowed.routes["/chain5"] = _redirect("/cat.png")
    alice = await sign_up(client, "alice")
    assert_error(
        await _add(client, alice, allowed.url("/chain2")), 422, "image_url_too_many_redirects"
    )
    assert ("HEAD", "/cat.png") not in allowed.requests
    assert len(allowed.requests) == 4  # the first URL and three hops, no more
    assert await _image_count(app) == 0


async def test_redirect_loop_is_refused(client: httpx.AsyncClient, allowed: ImageHost) -> None:
    allowed.routes["/loop-a"] = _redirect("/loop-b")
    allowed.routes["/loop-b"] = _redirect("/loop-a")
    alice = await sign_up(client, "alice")
    assert_error(
        await _add(client, alice, allowed.url("/loop-a")), 422, "image_url_too_many_redirects"
    )
    assert allowed.requests == [("HEAD", "/loop-a"), ("HEAD", "/loop-b")]


@pytest.mark.parametrize("location", ["ftp://example.com/cat.png", "http://user:pw@x.example/"])
async def test_redirect_to_an_unsupported_url_is_invalid(
    client: httpx.AsyncClient, allowed: ImageHost, location: str
) -> None:
    allowed.routes["/to-elsewhere"] = _redirect(location)
    alice = await sign_up(client, "alice")
    assert_error(await _add(client, alice, allowed.url("/to-elsewhere")), 422, "image_url_invalid")


# --- Truthful: the bytes decide --------------------------------------------------------


async def test_head_refused_then_get_decides(client: httpx.AsyncClient, allowed: ImageHost) -> None:
    allowed.routes["/no-head.png"] = _serve(make_image("PNG", (7, 5)), "image/png", head_status=405)
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url("/no-head.png"))
    assert response.status_code == 201, response.text
    assert (response.json()["width"], response.json()["height"]) == (7, 5)
    assert allowed.requests == [("HEAD", "/no-head.png"), ("GET", "/no-head.png")]


async def test_head_not_implemented_then_get_decides(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    allowed.routes["/no-head.gif"] = _serve(make_image("GIF"), "image/gif", head_status=501)
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url("/no-head.gif"))
    assert response.status_code == 201, response.text
    assert response.json()["content_type"] == "image/gif"


async def test_head_failure_is_final(client: httpx.AsyncClient, allowed: ImageHost) -> None:
    allowed.routes["/missing.png"] = _serve(make_image("PNG"), "image/png", head_status=404)
    alice = await sign_up(client, "alice")
    assert_error(
        await _add(client, alice, allowed.url("/missing.png")), 422, "image_url_bad_status"
    )
    assert allowed.requests == [("HEAD", "/missing.png")]


async def test_png_served_as_octet_stream_is_kept_with_its_real_type(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    png = make_image("PNG", (12, 9))
    allowed.routes["/download"] = _serve(png, "application/octet-stream")
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url("/download"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["content_type"] == "image/png"
    assert (body["width"], body["height"], body["size_bytes"]) == (12, 9, len(png))
    async with app_state(app).sessionmaker() as session:
        stored = await session.get(Image, body["id"])
        assert stored is not None
        assert (stored.content_type, stored.width, stored.height) == ("image/png", 12, 9)


@pytest.mark.parametrize(
    "body",
    [
        b"<!doctype html><html><body>phishing</body></html>",
        b"<svg xmlns='http://www.w3.org/2000/svg'><script>alert(1)</script></svg>",
        b"",
    ],
)
async def test_content_that_is_no_image_is_refused_whatever_the_header_claims(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost, body: bytes
) -> None:
    allowed.routes["/fake.png"] = _serve(body, "image/png")
    alice = await sign_up(client, "alice")
    assert_error(await _add(client, alice, allowed.url("/fake.png")), 422, "image_url_not_image")
    assert await _image_count(app) == 0


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [("PNG", "image/png"), ("JPEG", "image/jpeg"), ("GIF", "image/gif"), ("WEBP", "image/webp")],
)
async def test_width_and_height_are_recorded(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost, fmt: str, media_type: str
) -> None:
    allowed.routes[f"/sized.{fmt.lower()}"] = _serve(make_image(fmt, (64, 48)), media_type)
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url(f"/sized.{fmt.lower()}"))
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["content_type"], body["width"], body["height"]) == (media_type, 64, 48)
    async with app_state(app).sessionmaker() as session:
        stored = await session.get(Image, body["id"])
        assert stored is not None
        assert (stored.width, stored.height) == (64, 48)


async def test_ranged_answer_gives_the_full_size(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    png = make_image("PNG", (5, 5))
    ranges: list[tuple[str, str | None]] = []

    def ranged(handler: BaseHTTPRequestHandler) -> None:
        ranges.append((handler.command, handler.headers.get("Range")))
        handler.send_response(206 if handler.command == "GET" else 200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Range", f"bytes 0-{len(png) - 1}/123456")
        handler.send_header("Content-Length", str(len(png)))
        handler.end_headers()
        if handler.command == "GET":
            handler.wfile.write(png)

    allowed.routes["/ranged.png"] = ranged
    alice = await sign_up(client, "alice")
    response = await _add(client, alice, allowed.url("/ranged.png"))
    assert response.status_code == 201, response.text
    assert response.json()["size_bytes"] == 123456
    assert ranges == [("HEAD", None), ("GET", "bytes=0-65535")]


# --- Bounded: size and time ------------------------------------------------------------


class _EndlessBody:
    """Claims 10 GiB and keeps sending (a PNG header, then zeros) until the client leaves."""

    def __init__(self) -> None:
        self.sent = 0
        self.finished = threading.Event()

    def __call__(self, handler: BaseHTTPRequestHandler) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "image/png")
        handler.send_header("Content-Length", str(TEN_GIB))
        handler.end_headers()
        if handler.command != "GET":
            return
        handler.close_connection = True
        try:
            handler.wfile.write(make_image("PNG", (640, 480))[:33])  # signature and IHDR
            zeros = bytes(65536)
            while self.sent < TEN_GIB:
                handler.wfile.write(zeros)
                self.sent += len(zeros)
        except OSError:
            pass
        finally:
            self.finished.set()


async def test_ten_gib_body_is_cut_at_the_sniff_window(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    endless = _EndlessBody()
    allowed.routes["/huge.png"] = endless
    alice = await sign_up(client, "alice")
    started = time.monotonic()
    response = await _add(client, alice, allowed.url("/huge.png"))
    elapsed = time.monotonic() - started
    assert response.status_code == 201, response.text
    body = response.json()
    assert (body["width"], body["height"], body["size_bytes"]) == (640, 480, TEN_GIB)
    assert elapsed < TEST_TIMEOUT + 1
    assert await asyncio.to_thread(endless.finished.wait, 5)
    # The server stopped when the check hung up: what it sent is the window plus what the
    # kernel's socket buffers absorbed, nowhere near the 10 GiB it offered.
    assert endless.sent < 64 * 2**20


def _trickle(where: str) -> Any:
    """Send a response one byte at a time, 20 bytes a second, in its headers or its body."""

    def handle(handler: BaseHTTPRequestHandler) -> None:
        handler.close_connection = True
        try:
            if where == "headers":
                handler.wfile.write(b"HTTP/1.1 200 OK\r\n")
                for _ in range(200):
                    handler.wfile.write(b"X-Slow: a\r\n")
                    time.sleep(0.05)
                return
            handler.send_response(200)
            handler.send_header("Content-Type", "image/png")
            handler.send_header("Content-Length", "100000")
            handler.end_headers()
            if handler.command != "GET":
                return
            for byte in make_image("PNG")[:16] * 12:
                handler.wfile.write(bytes([byte]))
                time.sleep(0.05)
        except OSError:
            pass

    return handle


@pytest.mark.parametrize("where", ["headers", "body"])
async def test_trickling_host_is_cut_at_the_deadline(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost, where: str
) -> None:
    allowed.routes["/trickle.png"] = _trickle(where)
    alice = await sign_up(client, "alice")
    started = time.monotonic()
    response = await _add(client, alice, allowed.url("/trickle.png"))
    elapsed = time.monotonic() - started
    assert_error(response, 422, "image_url_unreachable")
    assert elapsed < TEST_TIMEOUT + 1
    assert await _image_count(app) == 0


async def test_slow_host_is_cut_at_the_deadline(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    started = time.monotonic()
    response = await _add(client, alice, allowed.url("/slow.png"))
    elapsed = time.monotonic() - started
    assert_error(response, 422, "image_url_unreachable")
    assert elapsed < TEST_TIMEOUT + 1


# --- Recheck ---------------------------------------------------------------------------


async def test_recheck_updates_the_metadata(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    allowed.routes["/changing"] = _serve(make_image("PNG", (3, 2)), "image/png")
    alice = await sign_up(client, "alice")
    admin = await sign_up_admin(app, client)
    image = (await _add(client, alice, allowed.url("/changing"))).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    allowed.routes["/changing"] = _serve(make_image("JPEG", (30, 20)), "image/jpeg")
    response = await client.post(f"{path}/recheck", headers=alice.headers)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["content_type"], body["width"], body["height"]) == ("image/jpeg", 30, 20)
    assert body["checked_at"] > image["checked_at"]
    assert body["id"] == image["id"]
    assert (await client.get(path)).json() == body
    by_admin = await client.post(f"{path}/recheck", headers=admin.headers)
    assert by_admin.status_code == 200
    assert by_admin.json()["checked_at"] > body["checked_at"]


async def test_failed_recheck_keeps_the_image_and_its_metadata(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    allowed.routes["/replaced"] = _serve(make_image("PNG", (3, 2)), "image/png")
    alice = await sign_up(client, "alice")
    image = (await _add(client, alice, allowed.url("/replaced"))).json()
    path = f"/users/{alice.id}/images/{image['id']}"
    allowed.routes["/replaced"] = _serve(b"<html>moved</html>", "image/png")
    assert_error(
        await client.post(f"{path}/recheck", headers=alice.headers), 422, "image_url_not_image"
    )
    assert (await client.get(path)).json() == image
    del allowed.routes["/replaced"]
    assert_error(
        await client.post(f"{path}/recheck", headers=alice.headers), 422, "image_url_bad_status"
    )
    assert (await client.get(path)).json() == image


async def test_recheck_is_for_the_owner_and_admins(
    client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    bob = await sign_up(client, "bob")
    image = (await _add(client, alice, allowed.url("/cat.png"))).json()
    path = f"/users/{alice.id}/images/{image['id']}/recheck"
    allowed.forget()
    assert_error(await client.post(path), 401, "not_authenticated")
    assert_error(await client.post(path, headers=bob.headers), 403, "forbidden")
    assert_error(
        await client.post(f"/users/{alice.id}/images/424242/recheck", headers=alice.headers),
        404,
        "image_not_found",
    )
    assert_error(
        await client.post(f"/users/{bob.id}/images/{image['id']}/recheck", headers=bob.headers),
        404,
        "image_not_found",
    )
    assert allowed.requests == []  # refused before any check
    assert (await client.get(f"/users/{alice.id}/images/{image['id']}")).json() == image


async def test_no_database_connection_is_held_during_a_recheck(
    app: FastAPI, client: httpx.AsyncClient, allowed: ImageHost
) -> None:
    seen: list[int] = []
    png = make_image("PNG")

    def probe(handler: BaseHTTPRequestHandler) -> None:
        seen.append(app_state(app).engine.pool.checkedout())
        _serve(png, "image/png")(handler)

    allowed.routes["/probe-recheck.png"] = probe
    alice = await sign_up(client, "alice")
    image = (await _add(client, alice, allowed.url("/probe-recheck.png"))).json()
    seen.clear()
    response = await client.post(
        f"/users/{alice.id}/images/{image['id']}/recheck", headers=alice.headers
    )
    assert response.status_code == 200, response.text
    assert seen
    assert all(count == 0 for count in seen), seen


# --- Settings --------------------------------------------------------------------------


class TestAllowedPorts:
    @pytest.fixture
    def settings_overrides(self, image_host: ImageHost) -> dict[str, Any]:
        return {"image_fetch_allowed_ports": [image_host.port]}

    @pytest.fixture
    def other_port(self) -> Iterator[ImageHost]:
        """An allowed address, but on a port outside the list."""
        host = ImageHost("127.0.0.1")
        host.start()
        yield host
        host.stop()

    async def test_port_in_the_list_is_allowed(
        self, client: httpx.AsyncClient, allowed: ImageHost
    ) -> None:
        alice = await sign_up(client, "alice")
        assert (await _add(client, alice, allowed.url("/cat.png"))).status_code == 201

    async def test_port_outside_the_list_is_forbidden_before_connecting(
        self, client: httpx.AsyncClient, other_port: ImageHost
    ) -> None:
        alice = await sign_up(client, "alice")
        response = await _add(client, alice, other_port.url("/cat.png"))
        assert_error(response, 422, "image_url_forbidden")
        assert other_port.connections == 0

    async def test_redirect_to_a_port_outside_the_list_is_forbidden(
        self, client: httpx.AsyncClient, allowed: ImageHost, other_port: ImageHost
    ) -> None:
        allowed.routes["/to-other-port"] = _redirect(other_port.url("/cat.png"))
        alice = await sign_up(client, "alice")
        response = await _add(client, alice, allowed.url("/to-other-port"))
        assert_error(response, 422, "image_url_forbidden")
        assert allowed.requests == [("HEAD", "/to-other-port")]
        assert other_port.connections == 0


class TestSniffingOff:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"image_sniff": False}

    async def test_head_alone_decides(self, client: httpx.AsyncClient, allowed: ImageHost) -> None:
        alice = await sign_up(client, "alice")
        response = await _add(client, alice, allowed.url("/cat.png"))
        assert response.status_code == 201, response.text
        body = response.json()
        assert (body["content_type"], body["width"], body["height"]) == ("image/png", None, None)
        assert allowed.requests == [("HEAD", "/cat.png")]

    async def test_header_type_decides(self, client: httpx.AsyncClient, allowed: ImageHost) -> None:
        allowed.routes["/download"] = _serve(make_image("PNG"), "application/octet-stream")
        alice = await sign_up(client, "alice")
        assert_error(
            await _add(client, alice, allowed.url("/download")), 422, "image_url_not_image"
        )
        assert_error(await _add(client, alice, allowed.url("/no-type")), 422, "image_url_not_image")


class TestConcurrencyLimit:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"image_fetch_concurrency": 1, "image_fetch_timeout": 5.0}

    async def test_checks_beyond_the_limit_wait_their_turn(
        self, client: httpx.AsyncClient, allowed: ImageHost
    ) -> None:
        in_flight = 0
        most = 0
        lock = threading.Lock()
        png = make_image("PNG")

        def counting(handler: BaseHTTPRequestHandler) -> None:
            nonlocal in_flight, most
            with lock:
                in_flight += 1
                most = max(most, in_flight)
            time.sleep(0.1)
            with lock:
                in_flight -= 1
            _serve(png, "image/png")(handler)

        allowed.routes["/counted.png"] = counting
        alice = await sign_up(client, "alice")
        responses = await asyncio.gather(
            *(_add(client, alice, allowed.url(f"/counted.png?n={n}")) for n in range(3))
        )
        assert [response.status_code for response in responses] == [201, 201, 201]
        assert len(allowed.requests) == 6
        assert most == 1


class TestAllowedNetworksAreNeeded:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"image_fetch_allowed_networks": []}

    @pytest.fixture
    def image_resolver(self) -> None:
        """The system's resolver: `localhost` comes from the machine's hosts file."""
        return None

    async def test_loopback_is_forbidden_without_an_exemption(
        self, client: httpx.AsyncClient, allowed: ImageHost
    ) -> None:
        alice = await sign_up(client, "alice")
        for url in (allowed.url("/cat.png"), f"http://localhost:{allowed.port}/cat.png"):
            assert_error(await _add(client, alice, url), 422, "image_url_forbidden")
        assert allowed.connections == 0


class TestRecheckRace:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"image_fetch_timeout": 5.0}

    async def test_recheck_does_not_overwrite_a_url_changed_meanwhile(
        self, client: httpx.AsyncClient, allowed: ImageHost
    ) -> None:
        gate_closed = threading.Event()
        entered = threading.Event()
        release = threading.Event()
        serve_gif = _serve(make_image("GIF", (9, 9)), "image/gif")

        def gated(handler: BaseHTTPRequestHandler) -> None:
            if handler.command == "GET" and gate_closed.is_set():
                entered.set()
                release.wait(5)
            serve_gif(handler)

        allowed.routes["/gated.gif"] = gated
        alice = await sign_up(client, "alice")
        image = (await _add(client, alice, allowed.url("/gated.gif"))).json()
        path = f"/users/{alice.id}/images/{image['id']}"
        gate_closed.set()
        recheck = asyncio.create_task(client.post(f"{path}/recheck", headers=alice.headers))
        try:
            assert await asyncio.to_thread(entered.wait, 5)
            moved = await client.patch(
                path, json={"image_url": allowed.url("/cat.png")}, headers=alice.headers
            )
            assert moved.status_code == 200, moved.text
        finally:
            release.set()
        assert_error(await recheck, 409, "image_changed")
        stored = (await client.get(path)).json()
        assert stored == moved.json()
        assert (stored["content_type"], stored["width"], stored["height"]) == ("image/png", 3, 2)
