"""TRUSTED_PROXIES is the one trust setting for the client address: from anyone else,
`X-Forwarded-For` changes nothing (not the limits, not /metrics, not the access log); and
/metrics in production answers only loopback and private networks by default."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from asgi_lifespan import LifespanManager
from fastapi import FastAPI
from starlette.types import Message, Receive, Scope, Send

from app.main import create_app
from app.ops.proxies import ProxyHeadersMiddleware
from tests.conftest import APPS_STARTED, empty_tables, make_settings
from tests.support.helpers import assert_error

# Only ever written into headers or given as the ASGI peer; no traffic goes there.
OUTSIDER = "198.51.100.7"
PUBLIC_PEER = "203.0.113.20"


@asynccontextmanager
async def _client(
    database_url: str, peer: str = "127.0.0.1", **overrides: Any
) -> AsyncIterator[httpx.AsyncClient]:
    application: FastAPI = create_app(make_settings(database_url, **overrides))
    APPS_STARTED.append(database_url)
    try:
        async with LifespanManager(application):
            transport = httpx.ASGITransport(app=application, client=(peer, 40000))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                yield client
    finally:
        await empty_tables(database_url)


def _access_clients(caplog: pytest.LogCaptureFixture) -> list[str | None]:
    return [getattr(r, "client", None) for r in caplog.records if r.name == "app.access"]


async def test_forwarded_for_from_an_untrusted_peer_changes_nothing(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with _client(database_url, metrics_allowed_networks=f"{OUTSIDER}/32") as client:
        with caplog.at_level(logging.DEBUG, logger="app.access"):
            response = await client.get("/metrics", headers={"X-Forwarded-For": OUTSIDER})
            assert_error(response, 404, "not_found")
            assert (await client.get("/users", headers={"X-Forwarded-For": OUTSIDER})).is_success
    assert _access_clients(caplog) == ["127.0.0.1", "127.0.0.1"]


async def test_forwarded_for_from_a_trusted_proxy_is_the_client(
    database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    async with _client(
        database_url, trusted_proxies="127.0.0.1", metrics_allowed_networks=f"{OUTSIDER}/32"
    ) as client:
        with caplog.at_level(logging.DEBUG, logger="app.access"):
            # A client-supplied entry to the left of the one our proxy appended is ignored.
            headers = {"X-Forwarded-For": f"10.0.0.9, {OUTSIDER}"}
            response = await client.get("/metrics", headers=headers)
            assert response.status_code == 200
            assert "gallery_http_requests_total" in response.text
    assert _access_clients(caplog) == [OUTSIDER]


@pytest.mark.parametrize(("trusted", "scheme"), [((), "http"), (("127.0.0.0/8",), "https")])
async def test_forwarded_proto_is_believed_only_from_a_trusted_proxy(
    trusted: tuple[str, ...], scheme: str
) -> None:
    seen: list[Scope] = []

    async def inner(scope: Scope, receive: Receive, send: Send) -> None:
        seen.append(scope)

    networks = [ipaddress.ip_network(network) for network in trusted]
    middleware = ProxyHeadersMiddleware(inner, networks)
    scope: Scope = {
        "type": "http",
        "scheme": "http",
        "client": ("127.0.0.1", 1),
        "headers": [(b"x-forwarded-proto", b"https"), (b"x-forwarded-for", OUTSIDER.encode())],
    }

    async def receive() -> Message:
        return {"type": "http.request"}

    async def send(message: Message) -> None:
        return None

    await middleware(scope, receive, send)
    assert seen[0]["scheme"] == scheme
    assert seen[0]["client"][0] == (OUTSIDER if trusted else "127.0.0.1")


class TestMetricsInProduction:
    async def test_public_peer_is_refused_without_configured_networks(
        self, database_url: str
    ) -> None:
        async with _client(database_url, peer=PUBLIC_PEER, environment="production") as client:
            assert_error(await client.get("/metrics"), 404, "not_found")

    @pytest.mark.parametrize("peer", ["127.0.0.1", "10.1.2.3", "172.20.0.5", "192.168.1.9"])
    async def test_loopback_and_private_peers_read_metrics(
        self, database_url: str, peer: str
    ) -> None:
        async with _client(database_url, peer=peer, environment="production") as client:
            assert (await client.get("/metrics")).status_code == 200

    async def test_configured_networks_still_decide(self, database_url: str) -> None:
        async with _client(
            database_url,
            peer=PUBLIC_PEER,
            environment="production",
            metrics_allowed_networks=f"{PUBLIC_PEER}/32",
        ) as client:
            assert (await client.get("/metrics")).status_code == 200
        async with _client(
            database_url,
            peer="10.1.2.3",
            environment="production",
            metrics_allowed_networks=f"{PUBLIC_PEER}/32",
        ) as client:
            assert_error(await client.get("/metrics"), 404, "not_found")

    async def test_development_keeps_metrics_open(self, database_url: str) -> None:
        async with _client(database_url, peer=PUBLIC_PEER, environment="development") as client:
            assert (await client.get("/metrics")).status_code == 200
