"""Prometheus metrics: requests, latency, image-check outcomes and database pool use.

Each app owns its own registry (nothing is registered at import time). With several
uvicorn workers, `gallery serve` sets `PROMETHEUS_MULTIPROC_DIR` before the workers start:
prometheus-client then keeps each worker's values in files there, and whichever worker
answers `/metrics` reports the sum over all of them.
"""

from __future__ import annotations

import ipaddress
import logging
import os
import shutil
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
    start_http_server,
)
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine

logger = logging.getLogger(__name__)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# At most this many (method, route, status) series are remembered (see `observe_request`).
_REQUEST_SERIES_KEPT = 1024
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
        self.image_rechecks = Counter(
            "gallery_image_rechecks",
            "Scheduled image rechecks by outcome: `ok`, `changed`, `not_modified`, a failed "
            "check's error code, `image_host_busy`, `postponed`, `discarded`...",
            ("outcome",),
            registry=self.registry,
        )
        # Read from the database when /metrics is scraped: every process reports the same
        # figures, and the most recent reading is the one shown.
        self.images_by_status = Gauge(
            "gallery_images",
            "Stored images by link status (ok, failing, broken).",
            ("status",),
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.images_due = Gauge(
            "gallery_images_due",
            "Images whose next check is due now.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self.images_oldest_due = Gauge(
            "gallery_images_oldest_due_seconds",
            "How long the longest-waiting due image has been due.",
            registry=self.registry,
            multiprocess_mode="mostrecent",
        )
        self._before_render: list[Callable[[], Awaitable[None]]] = []
        self._request_children: dict[tuple[str, str, int], tuple[Counter, Histogram]] = {}
        self.db_pool_in_use = Gauge(
            "gallery_db_pool_connections_in_use",
            "Database connections checked out of the pool right now.",
            registry=self.registry,
            multiprocess_mode="livesum",
        )

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        key = (method, route, status)
        children = self._request_children.get(key)
        if children is None:
            # `labels()` takes a lock and builds the label tuple on every call; the same few
            # (method, route, status) answer nearly every request, so their series are kept.
            children = (
                self.requests.labels(method, route, str(status)),
                self.latency.labels(method, route),
            )
            if len(self._request_children) < _REQUEST_SERIES_KEPT:
                self._request_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def observe_image_check(self, outcome: str) -> None:
        self.image_checks.labels(outcome).inc()

    def observe_recheck(self, outcome: str) -> None:
        self.image_rechecks.labels(outcome).inc()

    def set_image_health(
        self, by_status: Mapping[str, int], due: int, oldest_due_seconds: float
    ) -> None:
        for status, count in by_status.items():
            self.images_by_status.labels(status).set(count)
        self.images_due.set(due)
        self.images_oldest_due.set(oldest_due_seconds)

    def before_render(self, refresh: Callable[[], Awaitable[None]]) -> None:
        """Run `refresh` before each rendering (figures read from the database)."""
        self._before_render.append(refresh)

    async def refresh(self) -> None:
        """Run the refreshers; one that fails (the database is down) leaves its figures as
        they were: the metrics still answer, when they matter most."""
        for refresh in self._before_render:
            try:
                await refresh()
            except Exception:
                logger.warning("metrics refresh failed", exc_info=True)

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

    def serve(self, host: str, port: int) -> Callable[[], None]:
        """Serve this registry on http://HOST:PORT/metrics from a thread (for processes with
        no HTTP server of their own, such as `gallery worker`); returns the stop function."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)

        def stop() -> None:
            server.shutdown()
            server.server_close()
            thread.join(timeout=5)

        return stop

    def close(self) -> None:
        """Forget this worker's live gauges when it stops (multiprocess mode)."""
        if multiprocess_dir():
            multiprocess.mark_process_dead(os.getpid())  # type: ignore[no-untyped-call]
