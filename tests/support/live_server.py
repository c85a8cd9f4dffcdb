"""`gallery serve` as a real process on 127.0.0.1 (a free port, a temporary SQLite file)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[2]
TEST_SECRET = "test-secret-key-that-is-long-enough-for-hs256-0123456789"


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen[bytes]
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@contextmanager
def live_server(directory: Path, **settings: str) -> Iterator[LiveServer]:
    """Start `python -m app serve` (migrate, then uvicorn); SIGTERM it afterwards. A `PORT`
    among the settings is used as given (a test that must know the address beforehand)."""
    port = int(settings.get("PORT") or free_port())
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("DATABASE_", "PROMETHEUS_", "WEB_", "LOG_", "ADMIN_"))
    }
    env.update(
        {
            "PYTHONPATH": str(ROOT),
            "ENVIRONMENT": "test",
            "SECRET_KEY": TEST_SECRET,
            "DATABASE_URL": f"sqlite+aiosqlite:///{directory / 'live.db'}",
            "HOST": "127.0.0.1",
            "PORT": str(port),
            "LOG_FORMAT": "json",
            "GRACEFUL_TIMEOUT": "5",
        }
    )
    env.update(settings)
    log_path = directory / "server.log"
    with log_path.open("wb") as log_file:
        # cwd is the temporary directory: a developer's own .env is not read.
        process = subprocess.Popen(
            [sys.executable, "-m", "app", "serve"],
            cwd=directory,
            env=env,
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )
    server = LiveServer(f"http://127.0.0.1:{port}", process, log_path)
    try:
        _wait_ready(server)
        yield server
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _wait_ready(server: LiveServer, deadline_seconds: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            raise RuntimeError(f"server exited early:\n{server.log()}")
        try:
            if httpx.get(f"{server.url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server not ready in {deadline_seconds}s:\n{server.log()}")
