"""Prometheus metrics and the offline docs pages."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from tests.support.helpers import assert_error, sign_up
from tests.support.image_host import ImageHost


async def _samples(client: httpx.AsyncClient) -> dict[tuple[str, frozenset[Any]], float]:
    response = await client.get("/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return samples


def _value(samples: dict[tuple[str, frozenset[Any]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_metrics_count_requests_by_method_route_template_and_status(
    client: httpx.AsyncClient,
) -> None:
    alice = await sign_up(client, "alice")
    for _ in range(3):
        assert (await client.get(f"/users/{alice.id}")).status_code == 200
    assert (await client.get("/users/999999")).status_code == 404
    assert (await client.get("/nowhere/at/all")).status_code == 404
    samples = await _samples(client)
    route = "/users/{user_id}"
    assert (
        _value(samples, "gallery_http_requests_total", method="GET", route=route, status="200") == 3
    )
    assert (
        _value(samples, "gallery_http_requests_total", method="GET", route=route, status="404") == 1
    )
    # Unknown paths share one label: a scanner cannot blow up the series count.
    assert (
        _value(
            samples, "gallery_http_requests_total", method="GET", route="unmatched", status="404"
        )
        == 1
    )
    assert not any(f"/users/{alice.id}" in str(labels) for _, labels in samples)
    await client.get("/openapi.json")
    samples = await _samples(client)
    assert (
        _value(
            samples,
            "gallery_http_requests_total",
            method="GET",
            route="/openapi.json",
            status="200",
        )
        == 1
    )
    count = _value(
        samples, "gallery_http_request_duration_seconds_count", method="GET", route=route
    )
    assert count == 4
    assert (
        _value(
            samples,
            "gallery_http_request_duration_seconds_bucket",
            method="GET",
            route=route,
            le="+Inf",
        )
        == 4
    )


async def test_metrics_count_image_check_outcomes_by_code(
    client: httpx.AsyncClient, image_host: ImageHost
) -> None:
    alice = await sign_up(client, "alice")
    for path, status in (("/cat.png", 201), ("/page.html", 422), ("/gone.png", 422)):
        response = await client.post(
            f"/users/{alice.id}/images",
            json={"image_url": image_host.url(path)},
            headers=alice.headers,
        )
        assert response.status_code == status, response.text
    samples = await _samples(client)
    assert _value(samples, "gallery_image_checks_total", outcome="ok") == 1
    assert _value(samples, "gallery_image_checks_total", outcome="image_url_not_image") == 1
    assert _value(samples, "gallery_image_checks_total", outcome="image_url_bad_status") == 1


async def test_metrics_show_database_connections_in_use(client: httpx.AsyncClient) -> None:
    await sign_up(client, "alice")
    samples = await _samples(client)
    # Every request has returned its connection by the time /metrics answers.
    assert ("gallery_db_pool_connections_in_use", frozenset()) in samples
    assert _value(samples, "gallery_db_pool_connections_in_use") == 0


class TestMetricsDisabled:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"metrics_enabled": False}

    async def test_metrics_endpoint_is_gone(self, client: httpx.AsyncClient) -> None:
        assert_error(await client.get("/metrics"), 404, "not_found")
        assert (await client.get("/users")).status_code == 200


class TestMetricsRestricted:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"metrics_allowed_networks": "10.0.0.0/8, 192.168.1.0/24"}

    async def test_callers_outside_the_networks_get_404(self, client: httpx.AsyncClient) -> None:
        # The ASGI test client's address is 127.0.0.1, outside both networks.
        assert_error(await client.get("/metrics"), 404, "not_found")

    async def test_callers_inside_the_networks_read_metrics(self, app: FastAPI) -> None:
        transport = httpx.ASGITransport(app=app, client=("10.1.2.3", 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as inside:
            response = await inside.get("/metrics")
        assert response.status_code == 200
        assert "gallery_http_requests_total" in response.text


ASSET_URL = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_docs_pages_load_only_assets_from_the_app(
    client: httpx.AsyncClient, page: str
) -> None:
    response = await client.get(page)
    assert response.status_code == 200
    assert "<script>" not in response.text, "inline scripts would need a weaker CSP"
    urls = ASSET_URL.findall(response.text)
    assert urls
    for url in urls:
        assert url.startswith("/docs/assets/"), url
        asset = await client.get(url)
        assert asset.status_code == 200, url
        assert asset.content
    assert "cdn" not in response.text.lower()


async def test_docs_assets_are_served_with_their_types(client: httpx.AsyncClient) -> None:
    js = await client.get("/docs/assets/swagger-ui-bundle.js")
    assert "javascript" in js.headers["content-type"]
    assert b"SwaggerUIBundle" in js.content
    css = await client.get("/docs/assets/swagger-ui.css")
    assert css.headers["content-type"].startswith("text/css")
    redoc = await client.get("/docs/assets/redoc.standalone.js")
    assert "javascript" in redoc.headers["content-type"]
    assert b"https://cdn." not in redoc.content
    init = await client.get("/docs/assets/swagger-init.js")
    assert b"validatorUrl: null" in init.content
    assert_error(await client.get("/docs/assets/../../config.py"), 404, "not_found")
    assert_error(await client.get("/docs/assets/core.py"), 404, "not_found")


class TestDocsDisabled:
    @pytest.fixture
    def settings_overrides(self) -> dict[str, Any]:
        return {"docs_enabled": False}

    @pytest.mark.parametrize(
        "path", ["/docs", "/redoc", "/openapi.json", "/docs/assets/swagger-ui.css"]
    )
    async def test_docs_and_schema_are_not_served(
        self, client: httpx.AsyncClient, path: str
    ) -> None:
        assert_error(await client.get(path), 404, "not_found")
