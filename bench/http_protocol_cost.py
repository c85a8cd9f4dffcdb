"""What do the header bounds cost? (issue 12, item 5)

Serves the same app twice on 127.0.0.1, with uvicorn's plain httptools protocol and with
`app.ops.http_protocol:BoundedHttpToolsProtocol` (what `gallery serve` runs), and runs wrk
against each in turn, alternating rounds so drift in the machine's load hits both alike.
Prints requests per second of each and the ratio bounded/plain per path.

    .venv/bin/python bench/http_protocol_cost.py [--rounds 3] [--seconds 5] [--connections 32]

Loopback only; bounded: rounds x paths x 2 wrk runs of --seconds each.
"""

from __future__ import annotations

import argparse
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5)
    parser.add_argument("--connections", type=int, default=32)
    args = parser.parse_args()
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
    summary = {
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
