"""SIGTERM under load: in-flight requests complete, new connections are refused, the
process exits within 10 s, and every request that got a 2xx is stored."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import create_async_engine

from app.images.models import Image
from tests.conftest import ROOT, TEST_SECRET, migrate
from tests.reliability.loopback_app import uvicorn_command
from tests.reliability.support import free_port
from tests.support.helpers import PASSWORD
from tests.support.image_host import ImageHost

EXIT_WITHIN = 10.0
IN_FLIGHT = 8
SLOW_PATH = "/shutdown-slow.png"


@pytest.fixture
async def server(
    tmp_path: Path, image_host: ImageHost
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str, str]]:
    database_url = f"sqlite+aiosqlite:///{tmp_path / 'shutdown.db'}"
    await migrate(database_url, "head")
    port = free_port()
    env = {
        **os.environ,
        "DATABASE_URL": database_url,
        "SECRET_KEY": TEST_SECRET,
        "ENVIRONMENT": "test",
        "IMAGE_FETCH_TIMEOUT": "8",
        "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
        "PYTHONPATH": str(ROOT),
    }
    command = uvicorn_command(port, "--timeout-graceful-shutdown", "8")
    process = subprocess.Popen(command, cwd=ROOT, env=env)  # noqa: S603, ASYNC220
    base_url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(base_url=base_url) as http:
        while True:
            try:
                if (await http.get("/users")).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.1)
    try:
        yield process, base_url, database_url
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def _refuses_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return False
    except ConnectionRefusedError:
        return True


async def test_sigterm_finishes_in_flight_requests_and_refuses_new_ones(
    server: tuple[subprocess.Popen[bytes], str, str], image_host: ImageHost
) -> None:
    process, base_url, database_url = server
    port = int(base_url.rsplit(":", 1)[1])
    image_host.routes[SLOW_PATH] = image_host.routes["/slow.png"]
    seen_before = image_host.requests.count(("HEAD", SLOW_PATH))
    limits = httpx.Limits(max_connections=64)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        body = {
            "username": "shutdown",
            "email": "shutdown@example.com",
            "password": PASSWORD,
            "password_confirm": PASSWORD,
        }
        user_id = (await http.post("/accounts/register", json=body)).json()["id"]
        login = await http.post("/accounts/login", json={"login": "shutdown", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}
        acknowledged: list[int] = []

        async def fast_create(n: int) -> None:
            url = image_host.url(f"/cat.png?fast={n}")
            r = await http.post(
                f"/users/{user_id}/images", json={"image_url": url}, headers=headers
            )
            assert r.status_code == 201, r.text
            acknowledged.append(r.json()["id"])

        # Load before the signal, all acknowledged.
        await asyncio.gather(*(fast_create(n) for n in range(20)))

        async def slow_create(n: int) -> httpx.Response:
            url = image_host.url(f"{SLOW_PATH}?n={n}")
            return await http.post(
                f"/users/{user_id}/images", json={"image_url": url}, headers=headers
            )

        in_flight = [asyncio.create_task(slow_create(n)) for n in range(IN_FLIGHT)]
        deadline = time.monotonic() + 10
        while image_host.requests.count(("HEAD", SLOW_PATH)) - seen_before < IN_FLIGHT:
            assert time.monotonic() < deadline, "the slow checks never started"
            await asyncio.sleep(0.02)

        signalled = time.monotonic()
        process.send_signal(signal.SIGTERM)
        # New connections are refused while the in-flight requests are still running.
        while not await asyncio.to_thread(_refuses_connections, port):
            assert time.monotonic() - signalled < 2.0, "still accepting connections"
            await asyncio.sleep(0.05)
        assert not any(task.done() for task in in_flight)
        with pytest.raises(httpx.ConnectError):
            async with httpx.AsyncClient(base_url=base_url) as fresh:
                await fresh.get("/users")

        responses = await asyncio.gather(*in_flight)
        assert [r.status_code for r in responses] == [201] * IN_FLIGHT, [r.text for r in responses]
        acknowledged += [r.json()["id"] for r in responses]

    exit_code = await asyncio.to_thread(process.wait, EXIT_WITHIN + 5)
    assert time.monotonic() - signalled < EXIT_WITHIN
    # uvicorn re-raises the signal once it has shut down cleanly, as a process should.
    assert exit_code in (0, -signal.SIGTERM)

    engine = create_async_engine(database_url)
    try:
        async with engine.connect() as connection:
            stored = set((await connection.execute(select(Image.id))).scalars())
    finally:
        await engine.dispose()
    assert stored == set(acknowledged)
    assert len(acknowledged) == 20 + IN_FLIGHT
