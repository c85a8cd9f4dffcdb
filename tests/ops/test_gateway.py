"""The one gateway middleware: every answer, refusals included, carries the request id and
the security headers, is logged once and counted; pages keep their own policy; the cheap
paths (remembered Host verdicts, kept metric series, the redaction prefilter) answer
exactly what the slow ones did."""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from app.images.revalidation import GalleryRevalidation
from app.ops import logs
from app.ops.logs import may_hold_secret, redact
from app.ops.metrics import Metrics
from app.ops.middleware import (
    API_CSP,
    GatewayMiddleware,
    HostCheck,
    request_id_from_raw,
    with_gateway_headers,
)
from tests.support.helpers import assert_error, sign_up
from tests.support.log_capture import LogCapture


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


def _access_lines(run_logs: LogCapture, start: int) -> list[Any]:
    return [r for r in run_logs.records[start:] if r.name == "app.access"]


def test_the_app_has_one_middleware_layer_of_ours_and_the_gallery_short_way_inside_it(
    app: FastAPI,
) -> None:
    # The gallery's short way answers signed-out revalidations before routing; it must sit
    # inside the gateway, so those 304s are still logged, counted and given their headers.
    assert [m.cls for m in app.user_middleware] == [GatewayMiddleware, GalleryRevalidation]


class TestRefusals:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"allowed_hosts": "api.example.com", "max_body_bytes": 2048}

    async def test_a_refused_host_is_answered_logged_and_counted_like_any_answer(
        self, client: httpx.AsyncClient, run_logs: LogCapture
    ) -> None:
        start = len(run_logs.records)
        response = await client.get(
            "/users", headers={"Host": "evil.test", "X-Request-ID": "host-1"}
        )
        assert_error(response, 400, "invalid_host")
        assert response.headers["x-request-id"] == "host-1"
        assert response.headers["x-frame-options"] == "DENY"
        assert response.headers["content-security-policy"] == API_CSP
        [line] = _access_lines(run_logs, start)
        assert (line.status, line.route, line.request_id) == (400, "unmatched", "host-1")
        metrics = await client.get("/metrics", headers={"Host": "api.example.com"})
        assert (
            _metric(
                metrics.text,
                "gallery_http_requests_total",
                method="GET",
                route="unmatched",
                status="400",
            )
            == 1
        )

    async def test_a_chunked_body_over_the_limit_is_refused_with_id_and_headers(
        self, client: httpx.AsyncClient, run_logs: LogCapture
    ) -> None:
        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(8):
                yield b" " * 1024

        start = len(run_logs.records)
        response = await client.post(
            "/accounts/login",
            content=chunks(),
            headers={
                "Host": "api.example.com",
                "Content-Type": "application/json",
                "X-Request-ID": "chunked-1",
            },
        )
        assert "content-length" not in response.request.headers
        assert_error(response, 413, "payload_too_large")
        assert response.headers["x-request-id"] == "chunked-1"
        assert response.headers["x-content-type-options"] == "nosniff"
        [line] = _access_lines(run_logs, start)
        assert (line.status, line.route) == (413, "/accounts/login")


async def test_a_trailing_slash_is_the_same_route_in_the_answer_log_and_metrics(
    client: httpx.AsyncClient, run_logs: LogCapture
) -> None:
    start = len(run_logs.records)
    response = await client.get("/users/")
    assert response.status_code == 200
    assert response.json() == (await client.get("/users")).json()
    lines = _access_lines(run_logs, start)
    assert [(r.route, r.path) for r in lines] == [("/users", "/users"), ("/users", "/users")]
    metrics = await client.get("/metrics")
    assert (
        _metric(
            metrics.text, "gallery_http_requests_total", method="GET", route="/users", status="200"
        )
        == 2
    )


async def test_a_page_keeps_its_own_policy_and_gets_the_other_headers(
    client: httpx.AsyncClient,
) -> None:
    alice = await sign_up(client, "alice")
    page = await client.get(f"/u/{alice.username}")
    assert page.status_code == 200
    assert page.headers["content-security-policy"] != API_CSP
    assert page.headers.get_list("content-security-policy") == [
        page.headers["content-security-policy"]
    ]
    assert page.headers["x-content-type-options"] == "nosniff"
    assert page.headers["referrer-policy"] == "no-referrer"
    assert len(page.headers["x-request-id"]) == 32


async def test_every_request_id_is_new_and_hex(client: httpx.AsyncClient) -> None:
    ids = {(await client.get("/users")).headers["x-request-id"] for _ in range(20)}
    assert len(ids) == 20
    assert all(re.fullmatch(r"[0-9a-f]{32}", i) for i in ids)


def test_a_response_of_its_own_request_id_gets_ours_and_only_ours() -> None:
    security = ((b"x-frame-options", b"DENY"),)
    headers = with_gateway_headers(
        [(b"content-type", b"text/plain"), (b"x-request-id", b"forged")],
        (b"x-request-id", b"ours"),
        security,
    )
    assert headers == [
        (b"content-type", b"text/plain"),
        (b"x-request-id", b"ours"),
        (b"x-frame-options", b"DENY"),
    ]


@pytest.mark.parametrize("given", [b"x" * 129, b"has space", b"<script>", b"-lead", b"\xff\xfe"])
def test_a_malformed_raw_request_id_is_replaced(given: bytes) -> None:
    replaced = request_id_from_raw(given)
    assert replaced != given.decode("latin-1")
    assert re.fullmatch(r"[0-9a-f]{32}", replaced)


def test_remembered_host_verdicts_match_the_rule_and_stay_bounded() -> None:
    check = HostCheck(["api.example.com", "*.gallery.test"])
    for _ in range(2):  # the second pass answers from what was remembered
        assert check.allows(b"api.example.com")
        assert check.allows(b"API.example.com:8443")
        assert check.allows(b"x.gallery.test")
        assert not check.allows(b"gallery.test.evil")
        assert not check.allows(b"[::1]:8000")
        assert not check.allows(None)
    for n in range(1000):
        assert not check.allows(f"made-up-{n}.test".encode())
    assert len(check._judged) <= 64
    assert check.allows(b"api.example.com")
    assert not check.allows(b"made-up-999.test")


def test_kept_metric_series_count_like_fresh_ones() -> None:
    metrics = Metrics()
    for status in (200, 200, 404):
        metrics.observe_request("GET", "/users", status, 0.02)
    metrics.observe_request("POST", "/users", 200, 0.2)
    text = metrics.render().decode()
    assert (
        _metric(text, "gallery_http_requests_total", method="GET", route="/users", status="200")
        == 2
    )
    assert (
        _metric(text, "gallery_http_requests_total", method="GET", route="/users", status="404")
        == 1
    )
    assert (
        _metric(text, "gallery_http_request_duration_seconds_count", method="GET", route="/users")
        == 3
    )
    assert (
        _metric(
            text,
            "gallery_http_request_duration_seconds_bucket",
            method="POST",
            route="/users",
            le="0.1",
        )
        == 0
    )


@pytest.mark.parametrize(
    "text",
    [
        "GET /users/5/images/7 200 1.2ms",
        "Authorization: Bearer abc.def",
        "PASSWORD=hunter2",
        "postgresql://u:p@host/db",
        "x eYjabc.def.ghi",
        "tOkEn=1",
        "paſsword=hunter2",  # noqa: RUF001 (the long s: case-folds to s)
        "caf\u00e9 secret=1",
        "caf\u00e9 nothing here",
        "SIGNATURE=abc",
    ],
)
def test_the_redaction_prefilter_answers_what_the_search_does(text: str) -> None:
    assert may_hold_secret(text) == (logs._MAY_HOLD_SECRET.search(text) is not None)


def test_a_secret_in_an_access_line_path_is_still_masked(run_logs: LogCapture) -> None:
    record = logging.LogRecord("app.access", logging.INFO, __file__, 1, "GET %s", ("/x",), None)
    record.path = "/reset?token=abcdef123"
    assert "abcdef123" not in run_logs.format(record)
    assert redact("password=hunter2") == "password=[REDACTED]"


def test_remembered_proxy_verdicts_match_the_rule_and_stay_bounded(database_url: str) -> None:
    from tests.conftest import make_settings

    async def inner(scope: Any, receive: Any, send: Any) -> None:
        return None

    gateway = GatewayMiddleware(
        inner, make_settings(database_url, trusted_proxies="10.0.0.0/8"), None
    )
    for _ in range(2):
        assert gateway._trusted_peer({"client": ("10.1.2.3", 1)})
        assert not gateway._trusted_peer({"client": ("11.1.2.3", 1)})
        assert not gateway._trusted_peer({"client": ("not-an-address", 1)})
        assert not gateway._trusted_peer({"client": None})
    for n in range(5000):
        assert not gateway._trusted_peer({"client": (f"192.0.2.{n % 256}:{n}", 1)})
    assert len(gateway._peers) <= 4096
    assert gateway._trusted_peer({"client": ("10.9.9.9", 1)})


def test_read_routes_are_matched_first_and_the_document_keeps_its_sections(app: FastAPI) -> None:
    paths = [route.path for route in app.router.routes if hasattr(route, "path")]
    # Every route on the app's own router (app.main.add_routes), the reads before accounts.
    assert paths.index("/users/{user_id}/images/{image_id}") < paths.index("/accounts/login")
    assert paths.index("/users/{user_id}/images") < paths.index("/accounts/register")
    document = app.openapi()
    assert [tag["name"] for tag in document["tags"]] == ["accounts", "users", "images", "media"]
    order = list(document["paths"])
    assert order.index("/users/{user_id}/images/{image_id}") < order.index("/accounts/login")
