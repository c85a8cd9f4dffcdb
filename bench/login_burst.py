"""Does a burst of logins stall other requests? (issue 4)

Starts the API with uvicorn on 127.0.0.1 (a fresh SQLite database in a temporary directory),
creates accounts, then keeps a few readers calling GET /users while bursts of concurrent
logins (20 by default) run, and reports the latency of GET /users during the bursts next to a
quiet baseline. Password hashing runs in bounded worker threads, so the p99 during a burst
should stay under 100 ms.

    .venv/bin/python bench/login_burst.py [--logins 20] [--bursts 3] [--readers 4]

Loopback only; bounded in time (each phase has a deadline). Rate limits are switched off for
the run, since it registers and signs in many accounts from one address.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import secrets
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import make_url

ROOT = Path(__file__).resolve().parent.parent
HOST = "127.0.0.1"  # never anything but loopback
PASSWORD = "bench-passphrase-not-common-1"  # noqa: S105 (a throwaway account)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _percentile(samples: list[float], fraction: float) -> float:
    ordered = sorted(samples)
    index = min(len(ordered) - 1, max(0, round(fraction * (len(ordered) - 1))))
    return ordered[index]


def _summary(samples: list[float]) -> dict[str, Any]:
    milliseconds = [sample * 1000 for sample in samples]
    return {
        "requests": len(milliseconds),
        "p50_ms": round(_percentile(milliseconds, 0.50), 2),
        "p95_ms": round(_percentile(milliseconds, 0.95), 2),
        "p99_ms": round(_percentile(milliseconds, 0.99), 2),
        "max_ms": round(max(milliseconds), 2),
        "mean_ms": round(statistics.fmean(milliseconds), 2),
    }


async def _wait_ready(client: httpx.AsyncClient, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if (await client.get("/users?limit=1")).status_code == 200:
                return
        except httpx.TransportError:
            pass
        await asyncio.sleep(0.1)
    raise SystemExit("the server did not start in time")


async def _readers(
    base_url: str, count: int, stop: asyncio.Event, record: list[tuple[float, float]]
) -> None:
    async def read(client: httpx.AsyncClient) -> None:
        while not stop.is_set():
            started = time.perf_counter()
            response = await client.get("/users?limit=50")
            finished = time.perf_counter()
            response.raise_for_status()
            record.append((started, finished - started))

    limits = httpx.Limits(max_connections=count)
    async with httpx.AsyncClient(base_url=base_url, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(read(client) for _ in range(count)))


async def _burst(base_url: str, usernames: list[str]) -> tuple[float, float, list[float]]:
    async def login(client: httpx.AsyncClient, username: str) -> float:
        started = time.perf_counter()
        response = await client.post(
            "/accounts/login", json={"login": username, "password": PASSWORD}
        )
        response.raise_for_status()
        return time.perf_counter() - started

    limits = httpx.Limits(max_connections=len(usernames))
    async with httpx.AsyncClient(
        base_url=base_url, limits=limits, trust_env=False, timeout=30
    ) as client:
        started = time.perf_counter()
        durations = await asyncio.gather(*(login(client, name) for name in usernames))
        return started, time.perf_counter(), list(durations)


async def run(args: argparse.Namespace, base_url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=base_url, trust_env=False, timeout=30) as client:
        await _wait_ready(client, time.monotonic() + 30)
        usernames = [f"bench{number:03d}" for number in range(args.logins)]
        for username in usernames:
            response = await client.post(
                "/accounts/register",
                json={
                    "username": username,
                    "email": f"{username}@example.com",
                    "password": PASSWORD,
                    "password_confirm": PASSWORD,
                },
            )
            response.raise_for_status()

    # Quiet baseline.
    baseline: list[tuple[float, float]] = []
    stop = asyncio.Event()
    readers = asyncio.create_task(_readers(base_url, args.readers, stop, baseline))
    await asyncio.sleep(args.baseline_seconds)
    stop.set()
    await asyncio.wait_for(readers, timeout=30)

    # Bursts of logins while the readers keep going.
    during: list[tuple[float, float]] = []
    windows: list[tuple[float, float]] = []
    login_durations: list[float] = []
    stop = asyncio.Event()
    readers = asyncio.create_task(_readers(base_url, args.readers, stop, during))
    await asyncio.sleep(0.3)
    for _ in range(args.bursts):
        started, finished, durations = await asyncio.wait_for(
            _burst(base_url, usernames), timeout=60
        )
        windows.append((started, finished))
        login_durations.extend(durations)
        await asyncio.sleep(0.3)
    stop.set()
    await asyncio.wait_for(readers, timeout=30)

    in_bursts = [
        latency
        for started, latency in during
        if any(begin <= started <= end for begin, end in windows)
    ]
    return {
        "database": "postgresql" if args.database_url else "sqlite",
        "logins_per_burst": args.logins,
        "bursts": args.bursts,
        "readers": args.readers,
        "cpu_count": os.cpu_count(),
        # Other work on the machine skews every figure: the 1-minute load average at the end.
        "load_average_1m": round(os.getloadavg()[0], 2),
        "burst_seconds": [round(end - begin, 3) for begin, end in windows],
        "login_latency": _summary(login_durations),
        "get_users_baseline": _summary([latency for _, latency in baseline]),
        "get_users_during_bursts": _summary(in_bursts),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--logins", type=int, default=20, help="concurrent logins per burst")
    parser.add_argument("--bursts", type=int, default=3)
    parser.add_argument("--readers", type=int, default=4, help="concurrent GET /users loops")
    parser.add_argument("--baseline-seconds", type=float, default=2.0)
    parser.add_argument("--output", type=Path, help="also write the JSON result here")
    parser.add_argument(
        "--database-url",
        help="an empty PostgreSQL database on loopback (default: a temporary SQLite file)",
    )
    args = parser.parse_args()
    if not 1 <= args.logins <= 200 or not 1 <= args.bursts <= 20 or not 1 <= args.readers <= 32:
        raise SystemExit("keep the run bounded: logins 1-200, bursts 1-20, readers 1-32")

    if args.database_url and make_url(args.database_url).host not in {
        "127.0.0.1",
        "::1",
        "localhost",
    }:
        raise SystemExit("the benchmark only talks to loopback")

    port = _free_port()
    with tempfile.TemporaryDirectory() as directory:
        database_url = args.database_url or f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}"
        env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "DATABASE_URL": database_url,
            "SECRET_KEY": secrets.token_urlsafe(48),
            "RATE_LIMIT_ENABLED": "false",
            "REDIS_URL": "",
            "SMTP_HOST": "",
            "HOST": HOST,
            "PORT": str(port),
        }
        gallery = Path(sys.executable).with_name("gallery")
        subprocess.run([str(gallery), "migrate"], env=env, cwd=directory, check=True)  # noqa: S603
        server = subprocess.Popen(  # noqa: S603
            [str(gallery), "serve", "--no-migrate"],
            env=env,
            cwd=directory,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        try:
            result = asyncio.run(run(args, f"http://{HOST}:{port}"))
        finally:
            server.terminate()
            server.wait(timeout=10)
    p99 = result["get_users_during_bursts"]["p99_ms"]
    result["verdict"] = f"p99 of GET /users during bursts: {p99} ms (target < 100 ms)"
    text = json.dumps(result, indent=2)
    print(text)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
