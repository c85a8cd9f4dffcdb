"""What do the header bounds cost? (issue 12, item 5)

Serves the same app twice on 127.0.0.1, with uvicorn's plain httptools protocol and with
`app.ops.http_protocol:BoundedHttpToolsProtocol` (what `gallery serve` runs), and runs wrk
against each in turn, alternating rounds so drift in the machine's load hits both alike.
Prints requests per second of each and the ratio bounded/plain per path.

On a machine shared with other work, wrk's figures swing by more than the difference being
measured; so the script also drives both protocol classes in this one process, without a
network (a transport that keeps nothing, a trivial ASGI app, the same keep-alive request fed
--micro-requests times in alternating batches), and reports the time per request of each:
the parser and protocol overhead alone, the part the bounds could change.

    .venv/bin/python bench/http_protocol_cost.py [--rounds 3] [--seconds 5] [--connections 32]
    .venv/bin/python bench/http_protocol_cost.py --micro-only

Loopback only; bounded: rounds x paths x 2 wrk runs of --seconds each, and the in-process
loop of --micro-requests requests per class.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # never anything but loopback
PROTOCOLS = {
    "plain": "httptools",
    "bounded": "app.ops.http_protocol:BoundedHttpToolsProtocol",
}
PATHS = ("/health/live", "/users?limit=20")
_REQUESTS_PER_SECOND = re.compile(r"Requests/sec:\s+([\d.]+)")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_ready(url: str, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"{url} did not start in time")


def _wrk(url: str, seconds: int, connections: int) -> float:
    command = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", url]
    output = subprocess.run(  # noqa: S603 (our own fixed command line)
        command,
        capture_output=True,
        text=True,
        timeout=seconds + 30,
        check=True,
    ).stdout
    match = _REQUESTS_PER_SECOND.search(output)
    if match is None:
        raise SystemExit(f"no Requests/sec in wrk's output:\n{output}")
    return float(match.group(1))


class _NullTransport(asyncio.Transport):
    """A connection that accepts every write and keeps nothing."""

    def __init__(self) -> None:
        super().__init__()
        self._closing = False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": (HOST, 40000), "sockname": (HOST, 8000)}.get(name, default)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        return None

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        self._closing = True

    def pause_reading(self) -> None:
        return None

    def resume_reading(self) -> None:
        return None


async def _trivial_app(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"status":"ok"}'
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _micro(requests: int, batch: int = 500) -> dict[str, float]:
    """Seconds per request of each protocol class, fed the same request in one process."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    request = (
        b"GET /health/live HTTP/1.1\r\nHost: 127.0.0.1:8000\r\nUser-Agent: bench\r\n"
        b"Accept: */*\r\n\r\n"
    )
    loop = asyncio.get_running_loop()
    protocols = {}
    for name, protocol in PROTOCOLS.items():
        config = Config(app=_trivial_app, http=protocol, lifespan="off", log_level="warning")
        config.load()
        instance = config.http_protocol_class(  # type: ignore[call-arg]
            config=config, server_state=ServerState(), app_state={}, _loop=loop
        )
        instance.connection_made(_NullTransport())
        protocols[name] = instance
    spent = dict.fromkeys(protocols, 0.0)
    done = dict.fromkeys(protocols, 0)
    while min(done.values()) < requests:
        for name, instance in protocols.items():
            started = time.perf_counter()
            for _ in range(batch):
                instance.data_received(request)
                # Let the request's task answer before the next one arrives (keep-alive).
                await asyncio.sleep(0)
                await asyncio.sleep(0)
            spent[name] += time.perf_counter() - started
            done[name] += batch
    for instance in protocols.values():
        instance.connection_lost(None)
    return {name: spent[name] / done[name] for name in protocols}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--micro-requests", type=int, default=20000)
    parser.add_argument("--micro-only", action="store_true")
    args = parser.parse_args()
    micro = asyncio.run(_micro(args.micro_requests))
    micro_summary = {
        "plain_us_per_request": round(micro["plain"] * 1e6, 2),
        "bounded_us_per_request": round(micro["bounded"] * 1e6, 2),
        "ratio_bounded_to_plain": round(micro["bounded"] / micro["plain"], 3),
    }
    if args.micro_only:
        print(json.dumps({"in_process": micro_summary}, indent=2))
        return 0
    wrk = shutil.which("wrk")
    if wrk is None:
        raise SystemExit("wrk is not installed")
    with tempfile.TemporaryDirectory(prefix="gallery-protocol-bench-") as directory:
        database = Path(directory) / "bench.db"
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_", "ADMIN_", "WEB_", "LOG_"))
        }
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "ENVIRONMENT": "development",
                "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
                "DATABASE_URL": f"sqlite+aiosqlite:///{database}",
                "LOG_LEVEL": "WARNING",
            }
        )
        subprocess.run([sys.executable, "-m", "app", "migrate"], cwd=directory, env=env, check=True)
        servers: dict[str, tuple[subprocess.Popen[bytes], str]] = {}
        try:
            for name, protocol in PROTOCOLS.items():
                port = _free_port()
                command = [
                    sys.executable, "-m", "uvicorn", "app.main:create_app", "--factory",
                    "--host", HOST, "--port", str(port), "--http", protocol,
                    "--no-access-log", "--log-level", "warning",
                ]  # fmt: skip
                process = subprocess.Popen(  # noqa: S603 (our own fixed command line)
                    command,
                    cwd=directory,
                    env=env,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
                servers[name] = (process, f"http://{HOST}:{port}")
            for _, url in servers.values():
                _wait_ready(url, time.monotonic() + 60)
            results: dict[str, dict[str, list[float]]] = {
                path: {name: [] for name in servers} for path in PATHS
            }
            for round_number in range(args.rounds):
                order = list(servers) if round_number % 2 == 0 else list(reversed(servers))
                for path in PATHS:
                    for name in order:
                        url = servers[name][1] + path
                        results[path][name].append(_wrk(url, args.seconds, args.connections))
        finally:
            for process, _ in servers.values():
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
    summary: dict[str, Any] = {"in_process": micro_summary}
    summary |= {
        path: {
            "plain_rps": round(statistics.median(runs["plain"]), 1),
            "bounded_rps": round(statistics.median(runs["bounded"]), 1),
            "ratio_bounded_to_plain": round(
                statistics.median(runs["bounded"]) / statistics.median(runs["plain"]), 3
            ),
            "runs": runs,
        }
        for path, runs in results.items()
    }
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
