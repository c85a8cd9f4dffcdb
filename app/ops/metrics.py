"""Prometheus metrics: requests, latency, image-check outcomes and database pool use.

Each app owns its own registry (nothing is registered at import time). With several
uvicorn workers, `gallery serve` sets `PROMETHEUS_MULTIPROC_DIR` before the workers start:
prometheus-client then keeps each worker's values in files there, and whichever worker
answers `/metrics` reports the sum over all of them.
"""

from __future__ import annotations

import ipaddress
import os
import shutil
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


def multiprocess_dir() -> str | None:
    """The shared metrics directory when several processes serve the app."""
    return os.environ.get(MULTIPROC_ENV) or None


# Who may read /metrics in production when METRICS_ALLOWED_NETWORKS is empty: the host
# itself and the private networks a scraper sits on, never the internet.
DEFAULT_PRODUCTION_METRICS_NETWORKS = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
)


def metrics_client_allowed(client: str | None, networks: list[str], *, production: bool) -> bool:
    """Whether this client may read /metrics: the configured networks; when none are
    configured, anyone in development and only loopback and private networks in production."""
    if not networks:
        if not production:
            return True
        networks = list(DEFAULT_PRODUCTION_METRICS_NETWORKS)
    try:
        address = ipaddress.ip_address(client or "")
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in ipaddress.ip_network(network, strict=False) for network in networks)


def prepare_multiprocess_dir(directory: Path) -> None:
    """Empty the shared directory before the workers start: old files would count twice."""
    directory.mkdir(parents=True, exist_ok=True)
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()


class Metrics:
    """The app's metrics, registered in a registry of its own."""

    content_type = CONTENT_TYPE_LATEST

    def __init__(self) -> None:
        shared = multiprocess_dir()
        if shared:
            Path(shared).mkdir(parents=True, exist_ok=True)
        self.registry = CollectorRegistry(auto_describe=True)
        self.requests = Counter(
            "gallery_http_requests",
            "HTTP requests answered, by method, route template and status.",
            ("method", "route", "status"),
            registry=self.registry,
        )
        self.latency = Histogram(
            "gallery_http_request_duration_seconds",
            "Time to answer a request, by method and route template.",
            ("method", "route"),
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.image_checks = Counter(
            "gallery_image_checks",
            "Image URL checks by outcome: `ok` or the error code.",
            ("outcome",),
            registry=self.registry,
        )
        self.db_pool_in_use = Gauge(
            "gallery_db_pool_connections_in_use",
            "Database connections checked out of the pool right now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self.requests.labels(method, route, str(status)).inc()
        self.latency.labels(method, route).observe(seconds)

    def observe_image_check(self, outcome: str) -> None:
        self.image_checks.labels(outcome).inc()

    def watch_pool(self, engine: AsyncEngine) -> None:
        """Follow the engine's pool: +1 on checkout, -1 on checkin."""
        gauge = self.db_pool_in_use

        def on_checkout(*_: object) -> None:
            gauge.inc()

        def on_checkin(*_: object) -> None:
            gauge.dec()

        event.listen(engine.sync_engine, "checkout", on_checkout)
        event.listen(engine.sync_engine, "checkin", on_checkin)

    def render(self) -> bytes:
        """The exposition text: this process's values, or every worker's in multiprocess mode."""
        if multiprocess_dir():
            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
            return generate_latest(registry)
        return generate_latest(self.registry)

    def close(self) -> None:
        """Forget this worker's live gauges when it stops (multiprocess mode)."""
        if multiprocess_dir():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
