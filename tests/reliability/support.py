"""Reusable reliability fixtures: a loopback-only outbound transport, a live uvicorn server
on loopback, a throwaway PostgreSQL cluster the tests may stop, and a misbehaving host."""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from glob import glob
from pathlib import Path

import uvicorn
from fastapi import FastAPI

from app.images.fetcher import ImageTransport


class LoopbackOnlyTransport(ImageTransport):
    """Connects only to 127.0.0.0/8 or ::1; anything else is refused before a packet is
    sent, as if the host were unreachable."""

    def __init__(self) -> None:
        super().__init__()
        self.refused: list[str] = []

    async def connect(
        self, address: str, port: int, *, tls_server_name: str | None
    ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        if not ipaddress.ip_address(address).is_loopback:
            self.refused.append(f"{address}:{port}")
            raise ConnectionRefusedError("refused: not a loopback address")
        return await super().connect(address, port, tls_server_name=tls_server_name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def live_server(app: FastAPI) -> Iterator[str]:
    """Serve `app` with uvicorn on 127.0.0.1 in a thread (its own event loop, lifespan on);
    yields the base URL."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=15)
        sock.close()


def postgres_bin_dir() -> Path | None:
    """The newest /usr/lib/postgresql/*/bin holding initdb and pg_ctl, if any."""
    candidates = sorted(
        glob("/usr/lib/postgresql/*/bin"), key=lambda p: int(Path(p).parent.name or 0)
    )
    for directory in reversed(candidates):
        if Path(directory, "initdb").exists() and Path(directory, "pg_ctl").exists():
            return Path(directory)
    found = shutil.which("initdb")
    return Path(found).parent if found and shutil.which("pg_ctl") else None


class PostgresCluster:
    """A PostgreSQL cluster of our own in a temporary directory, on a free loopback port,
    that tests may stop and start. Run as `postgres` when we are root (initdb refuses root)."""

    def __init__(self, bin_dir: Path) -> None:
        self.bin_dir = bin_dir
        self.port = free_port()
        self.directory = Path(tempfile.mkdtemp(prefix="gallery-pg-"))
        self.data = self.directory / "data"
        self.log = self.directory / "postgres.log"
        self._as_user: list[str] = []
        if os.geteuid() == 0:
            self._as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(self.directory, "postgres", "postgres")
        self.server_url = f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/postgres"

    def _run(self, *args: str, timeout: float = 60) -> None:
        subprocess.run(  # noqa: S603
            [*self._as_user, *args], check=True, timeout=timeout, capture_output=True
        )

    def init(self) -> None:
        self._run(
            str(self.bin_dir / "initdb"),
            "-D",
            str(self.data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        )

    def start(self) -> None:
        options = (
            f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off"
            " -c max_connections=100"
        )
        self._run(
            str(self.bin_dir / "pg_ctl"),
            "-D",
            str(self.data),
            "-l",
            str(self.log),
            "-o",
            options,
            "-w",
            "-t",
            "30",
            "start",
        )

    def stop(self) -> None:
        self._run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")

    def destroy(self) -> None:
        with contextlib.suppress(subprocess.SubprocessError):
            self.stop()
        shutil.rmtree(self.directory, ignore_errors=True)


class MisbehavingHost:
    """A raw TCP server on 127.0.0.1 whose every connection gets `behaviour(conn)`:
    used for resets, hangs, garbage and broken TLS that a well-behaved server cannot give."""

    def __init__(self, behaviour: Callable[[socket.socket], None]) -> None:
        self._behaviour = behaviour
        self._listener = socket.socket()
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(64)
        self.port = self._listener.getsockname()[1]
        self._closed = threading.Event()
        self._connections: list[socket.socket] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._closed.is_set():
            try:
                connection, _ = self._listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            threading.Thread(target=self._handle, args=(connection,), daemon=True).start()

    def _handle(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            self._behaviour(connection)

    def url(self, path: str = "/image.png", scheme: str = "http") -> str:
        return f"{scheme}://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> MisbehavingHost:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._closed.set()
        self._listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.close()


def read_request_head(connection: socket.socket) -> bytes:
    """Read until the end of the request headers (or until the client gives up)."""
    data = b""
    connection.settimeout(5)
    while b"\r\n\r\n" not in data:
        chunk = connection.recv(4096)
        if not chunk:
            break
        data += chunk
    return data
