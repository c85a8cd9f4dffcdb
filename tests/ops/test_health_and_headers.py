"""Health probes, request ids, security headers, hosts and CORS."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI

from app.main import create_app
from app.ops import health
from app.ops.middleware import API_CSP, DOCS_CSP
from tests.conftest import make_settings
from tests.support.helpers import assert_error, sign_up
from tests.support.log_capture import LogCapture


async def test_liveness_answers_without_checking_anything(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/live")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


async def test_readiness_answers_ok_when_the_database_does(client: httpx.AsyncClient) -> None:
    response = await client.get("/health/ready")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


async def _get_from(app: FastAPI, path: str) -> httpx.Response:
    transport = httpx.ASGITransport(app=app)
    async with (
        LifespanManager(app),
        httpx.AsyncClient(transport=transport, base_url="http://t") as client,
    ):
        return await client.get(path)


async def test_readiness_is_503_naming_the_database_when_it_cannot_be_opened(
    tmp_path: Path,
) -> None:
    missing = tmp_path / "no" / "such" / "dir" / "gallery.db"
    app = create_app(make_settings(f"sqlite+aiosqlite:///{missing}"))
    response = await _get_from(app, "/health/ready")
    body = assert_error(response, 503, "database_unavailable")
    assert "database" in body["detail"]
    assert response.headers["x-request-id"]
    live = await _get_from(
        create_app(make_settings(f"sqlite+aiosqlite:///{missing}")), "/health/live"
    )
    assert live.status_code == 200


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A loopback port that accepts connections and never answers (a hung database)."""
    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.1)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])
            except OSError:
                continue

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield listener.getsockname()[1]
    stop.set()
    thread.join()
    for connection in accepted:
        connection.close()
    listener.close()


async def test_readiness_gives_up_on_a_database_that_hangs(
    silent_server: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "READY_TIMEOUT_SECONDS", 0.3)
    url = f"postgresql+asyncpg://gallery:pw@127.0.0.1:{silent_server}/gallery"
    app = create_app(make_settings(url))
    response = await _get_from(app, "/health/ready")
    body = assert_error(response, 503, "database_unavailable")
    assert "0.3 seconds" in body["detail"]


async def test_request_id_is_generated_and_returned_on_every_response(
    client: httpx.AsyncClient,
) -> None:
    responses = [
        await client.get("/users"),
        await client.get("/no/such/path"),
        await client.get("/users/me"),
        await client.post("/accounts/register", json={}),
    ]
    ids = [response.headers.get("x-request-id") for response in responses]
    assert [r.status_code for r in responses] == [200, 404, 401, 422]
    assert all(i and len(i) == 32 for i in ids), ids
    assert len(set(ids)) == len(ids)


@pytest.mark.parametrize("given", ["abc-123", "0f8fad5b-d9cb-469f-a165-70867728950e", "a.b:c_d"])
async def test_a_well_formed_request_id_is_kept(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/users", headers={"X-Request-ID": given})
    assert response.headers["x-request-id"] == given


@pytest.mark.parametrize("given", ["x" * 129, "has space", "new\\nline", "<script>", "-lead"])
async def test_a_malformed_request_id_is_replaced(client: httpx.AsyncClient, given: str) -> None:
    response = await client.get("/users", headers={"X-Request-ID": given})
    assert response.status_code == 200
    assert response.headers["x-request-id"] != given
    assert len(response.headers["x-request-id"]) == 32


async def test_each_request_is_logged_once_with_route_status_duration_and_id(
    client: httpx.AsyncClient, run_logs: LogCapture
) -> None:
    alice = await sign_up(client, "alice")
    start = len(run_logs.records)
    response = await client.get(f"/users/{alice.id}", headers={"X-Request-ID": "trace-42"})
    assert response.status_code == 200
    lines = [r for r in run_logs.records[start:] if r.name == "app.access"]
    assert len(lines) == 1
    entry: Any = lines[0]
    assert (entry.method, entry.route, entry.path, entry.status) == (
        "GET",
        "/users/{user_id}",
        f"/users/{alice.id}",
        200,
    )
    assert entry.duration_ms >= 0
    assert entry.request_id == "trace-42"
    assert entry.levelname == "INFO"


async def test_health_probes_are_not_access_log_noise(
    client: httpx.AsyncClient, run_logs: LogCapture
) -> None:
    start = len(run_logs.records)
    await client.get("/health/live")
    await client.get("/health/ready")
    lines = [r for r in run_logs.records[start:] if r.name == "app.access"]
    assert len(lines) == 2
    assert all(r.levelname == "DEBUG" for r in lines)


async def test_every_log_line_of_a_request_carries_its_id_and_errors_are_json_500(
    app: FastAPI, client: httpx.AsyncClient, run_logs: LogCapture
) -> None:
    async def explode() -> None:
        raise RuntimeError("boom")

    app.add_api_route("/explode", explode)
    start = len(run_logs.records)
    response = await client.get("/explode", headers={"X-Request-ID": "req-boom"})
    assert_error(response, 500, "internal_error")
    assert response.headers["x-request-id"] == "req-boom"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert "boom" not in response.text
    # Everything the app logged (the test client's own httpx lines are not the app's).
    records = [r for r in run_logs.records[start:] if not r.name.startswith("httpx")]
    assert {r.name for r in records} >= {"app.errors", "app.access"}
    assert all(getattr(r, "request_id", None) == "req-boom" for r in records)
    assert [r.status for r in records if r.name == "app.access"] == [500]  # type: ignore[attr-defined]


async def test_security_headers_on_api_answers_and_a_docs_policy_on_docs(
    client: httpx.AsyncClient,
) -> None:
    for path in ("/users", "/no/such/path"):
        headers = (await client.get(path)).headers
        assert headers["x-content-type-options"] == "nosniff"
        assert headers["referrer-policy"] == "no-referrer"
        assert headers["x-frame-options"] == "DENY"
        assert headers["content-security-policy"] == API_CSP
    docs = await client.get("/docs")
    assert docs.headers["content-security-policy"] == DOCS_CSP
    assert "script-src 'self';" in DOCS_CSP
    assert "unsafe-eval" not in DOCS_CSP


class TestAllowedHosts:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"allowed_hosts": "api.example.com,*.gallery.test"}

    async def test_unknown_host_is_refused(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/users", headers={"Host": "evil.test"})
        assert_error(response, 400, "invalid_host")
        assert response.headers["x-request-id"]

    @pytest.mark.parametrize("host", ["api.example.com", "API.example.com:8443", "x.gallery.test"])
    async def test_listed_hosts_are_served(self, client: httpx.AsyncClient, host: str) -> None:
        response = await client.get("/users", headers={"Host": host})
        assert response.status_code == 200

    async def test_health_probes_are_served_for_any_host(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/health/live", headers={"Host": "10.0.0.5:8000"})
        assert response.status_code == 200


class TestCors:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"cors_origins": "https://app.example.com"}

    async def test_listed_origin_may_call_and_read_the_request_id(
        self, client: httpx.AsyncClient
    ) -> None:
        response = await client.get("/users", headers={"Origin": "https://app.example.com"})
        assert response.headers["access-control-allow-origin"] == "https://app.example.com"
        assert "x-request-id" in response.headers["access-control-expose-headers"].lower()
        preflight = await client.options(
            "/users/me",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "GET",
                "Access-Control-Request-Headers": "Authorization",
            },
        )
        assert preflight.status_code == 200
        assert "authorization" in preflight.headers["access-control-allow-headers"].lower()

    async def test_other_origins_get_no_cors_headers(self, client: httpx.AsyncClient) -> None:
        response = await client.get("/users", headers={"Origin": "https://evil.example"})
        assert response.status_code == 200
        assert "access-control-allow-origin" not in response.headers


async def test_without_cors_origins_no_origin_is_allowed(client: httpx.AsyncClient) -> None:
    response = await client.get("/users", headers={"Origin": "https://app.example.com"})
    assert "access-control-allow-origin" not in response.headers
