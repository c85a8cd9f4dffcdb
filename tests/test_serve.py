"""`gallery serve` for real: several workers, shared metrics, JSON logs, graceful stop."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from app.cli import MALLOC_MMAP_THRESHOLD, keep_large_blocks_mapped
from tests.support.helpers import PASSWORD
from tests.support.live_server import live_server
from tests.support.log_capture import find_leaks

MAX_REQUESTS = 400


def _requests_to_users(metrics_text: str) -> float:
    for family in text_string_to_metric_families(metrics_text):
        for sample in family.samples:
            labels = sample.labels
            if (
                sample.name == "gallery_http_requests_total"
                and labels.get("route") == "/users"
                and labels.get("status") == "200"
            ):
                return sample.value
    return 0.0


def _json_lines(log: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.splitlines() if line.startswith("{")]


def test_two_workers_share_metrics_log_json_and_stop_gracefully(tmp_path: Path) -> None:
    # TRUSTED_PROXIES is empty (the default): the test client (127.0.0.1) may not set
    # X-Forwarded-For, loopback though it is.
    with live_server(tmp_path, WEB_CONCURRENCY="2") as server:
        # A new connection per request, so both workers get some of them.
        no_reuse = httpx.Limits(max_keepalive_connections=0)
        with httpx.Client(base_url=server.url, limits=no_reuse, timeout=10) as client:
            body = {
                "username": "alice",
                "email": "alice@example.com",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            }
            assert client.post("/accounts/register", json=body).status_code == 201
            token = client.post(
                "/accounts/login", json={"login": "alice", "password": PASSWORD}
            ).json()["access_token"]
            me = client.get("/users/me", headers={"Authorization": f"Bearer {token}"})
            assert me.status_code == 200
            sent = 0
            pids: set[int] = set()
            while sent < MAX_REQUESTS:
                response = client.get(
                    "/users",
                    headers={"X-Request-ID": f"load-{sent}", "X-Forwarded-For": "203.0.113.9"},
                )
                assert response.status_code == 200
                assert response.headers["x-request-id"] == f"load-{sent}"
                sent += 1
                if sent % 20 == 0:
                    pids = {
                        entry["pid"]
                        for entry in _json_lines(server.log())
                        if entry["logger"] == "app.access" and entry.get("route") == "/users"
                    }
                    if len(pids) == 2:
                        break
            assert len(pids) == 2, "one worker answered every request"
            # Whichever worker answers /metrics reports the sum over both.
            for _ in range(6):
                assert _requests_to_users(client.get("/metrics").text) == sent
            # Both workers started with glibc's fixed mmap threshold (app.cli).
            name, value = MALLOC_MMAP_THRESHOLD
            for pid in pids:
                environment = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
                assert f"{name}={value}".encode() in environment, pid
        server.process.send_signal(signal.SIGTERM)
        assert server.process.wait(timeout=30) == 0
    log = server.log()
    lines = _json_lines(log)
    access = [entry for entry in lines if entry["logger"] == "app.access"]
    assert len([e for e in access if e.get("route") == "/users"]) == sent
    for entry in access:
        assert {"method", "route", "status", "duration_ms", "request_id"} <= set(entry)
        # A forwarded address from an untrusted peer is not believed.
        assert entry["client"] == "127.0.0.1"
    assert not find_leaks(log.splitlines(), [PASSWORD, token])
    # Everything the server wrote is JSON (uvicorn's own lines and the migration's too).
    stray = [line for line in log.splitlines() if line.strip() and not line.startswith("{")]
    assert not stray, stray[:5]


def test_an_operators_own_mmap_threshold_is_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    name, value = MALLOC_MMAP_THRESHOLD
    monkeypatch.delenv(name, raising=False)
    keep_large_blocks_mapped()
    assert os.environ[name] == value
    monkeypatch.setenv(name, "1048576")
    keep_large_blocks_mapped()
    assert os.environ[name] == "1048576"
