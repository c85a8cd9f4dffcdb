"""The edges of HTTP: uncacheable tokens, a 413 answered like every other answer, a 405 that
names every method of its path, and a text log that one request cannot split in two."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from app.ops.logs import TextFormatter
from tests.support.helpers import PASSWORD, assert_error, sign_up


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    return {"max_body_bytes": 2048}


def _assert_not_cacheable(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["pragma"] == "no-cache"


async def test_token_responses_are_not_cacheable(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    login = await client.post("/accounts/login", json={"login": "alice", "password": PASSWORD})
    _assert_not_cacheable(login)
    form = await client.post("/accounts/login", data={"username": "alice", "password": PASSWORD})
    _assert_not_cacheable(form)
    refreshed = await client.post(
        "/accounts/refresh", json={"refresh_token": login.json()["refresh_token"]}
    )
    _assert_not_cacheable(refreshed)


async def test_oversized_body_answer_has_request_id_security_headers_and_log_line(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = await client.post(
            "/accounts/login",
            content=b"{" + b" " * 4096 + b"}",
            headers={"Content-Type": "application/json", "X-Request-ID": "too-big-1"},
        )
    assert_error(response, 413, "payload_too_large")
    assert response.headers["x-request-id"] == "too-big-1"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["x-frame-options"] == "DENY"
    assert "default-src 'none'" in response.headers["content-security-policy"]
    [line] = [r for r in caplog.records if r.name == "app.access"]
    assert (line.status, line.method, line.path) == (413, "POST", "/accounts/login")  # type: ignore[attr-defined]
    assert line.request_id == "too-big-1"  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("path", "methods"),
    [
        ("/images", {"GET", "DELETE"}),
        ("/accounts/profile", {"GET", "PATCH", "DELETE"}),
        ("/accounts/login", {"POST"}),
    ],
)
async def test_405_lists_every_method_of_the_path(
    client: httpx.AsyncClient, path: str, methods: set[str]
) -> None:
    response = await client.put(path, json={})
    assert_error(response, 405, "method_not_allowed")
    allowed = {method.strip() for method in response.headers["allow"].split(",")}
    assert allowed == methods


async def test_text_log_escapes_control_characters_a_client_sent(
    client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO, logger="app.access"):
        response = await client.get(
            "/nothing%0A2026-12-02 10:00:00,000 INFO    app.access [-] GET /forged 200%0D%E2%80%A8x"
        )
    assert_error(response, 404, "not_found")
    [record] = [r for r in caplog.records if r.name == "app.access"]
    assert "\n" in record.path  # type: ignore[attr-defined]  # the raw value did hold one
    line = TextFormatter().format(record)
    assert "\n" not in line
    assert "\r" not in line
    assert "\u2028" not in line
    assert "/nothing\\x0a2026-12-02" in line
    assert "200\\x0d\\u2028x" in line
