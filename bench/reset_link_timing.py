"""Does a reset-link request tell by its time whether the account exists? (issue 12, item 8)

Starts `gallery serve` on 127.0.0.1 (a fresh SQLite database in a temporary directory, or
--database-url), registers one account, then sends POST /accounts/send-reset-password-link
for that account and for a login that matches nobody, interleaved one by one (so drift in
the machine's load hits both alike), and compares the median answer times. The endpoint
does the same work either way (the lookup, the token and the mail run after the answer), so
the medians should be within 10% of each other.

    .venv/bin/python bench/reset_link_timing.py [--requests 200] [--database-url URL]

Exits 1 when the medians differ by more than --tolerance (0.10). Loopback only; bounded:
2 x (--requests + --warmup) sequential requests and a deadline of --deadline seconds. Rate
limits are off for the run (it asks for hundreds of links from one address); with limits
on the per-account limit also runs after the answer, so it cannot show in the time either.
"""

from __future__ import annotations

import argparse
import json
import os
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
PASSWORD = "bench-passphrase-not-common-1"  # noqa: S105 (a throwaway account)
EXISTING = "bench-reset@example.com"
MISSING = "nobody-here@example.com"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return int(probe.getsockname()[1])


def _wait_ready(client: httpx.Client, deadline: float) -> None:
    while time.monotonic() < deadline:
        try:
            if client.get("/health/ready").status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise SystemExit("the server did not start in time")


def _ask(client: httpx.Client, login: str) -> float:
    started = time.perf_counter()
    response = client.post("/accounts/send-reset-password-link", json={"login": login})
    elapsed = time.perf_counter() - started
    if response.status_code != 202:
        raise SystemExit(f"unexpected answer {response.status_code}: {response.text}")
    return elapsed


def measure(base_url: str, requests: int, warmup: int, deadline: float) -> dict[str, object]:
    with httpx.Client(base_url=base_url, trust_env=False, timeout=10) as client:
        _wait_ready(client, time.monotonic() + 60)
        registered = client.post(
            "/accounts/register",
            json={
                "username": "bench-reset",
                "email": EXISTING,
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            },
        )
        registered.raise_for_status()
        bodies = {
            client.post("/accounts/send-reset-password-link", json={"login": login}).text
            for login in (EXISTING, MISSING)
        }
        if len(bodies) != 1:
            raise SystemExit(f"the answers differ: {bodies}")
        for _ in range(warmup):
            _ask(client, EXISTING)
            _ask(client, MISSING)
        existing: list[float] = []
        missing: list[float] = []
        for number in range(requests):
            if time.monotonic() > deadline:
                raise SystemExit(f"deadline passed after {number} pairs")
            # Alternate which goes first, so neither always follows the other.
            if number % 2:
                existing.append(_ask(client, EXISTING))
                missing.append(_ask(client, MISSING))
            else:
                missing.append(_ask(client, MISSING))
                existing.append(_ask(client, EXISTING))
    existing_median = statistics.median(existing)
    missing_median = statistics.median(missing)
    return {
        "requests_each": requests,
        "existing_median_ms": round(existing_median * 1000, 3),
        "missing_median_ms": round(missing_median * 1000, 3),
        "ratio": round(
            max(existing_median, missing_median) / min(existing_median, missing_median), 4
        ),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--warmup", type=int, default=20)
    parser.add_argument("--tolerance", type=float, default=0.10)
    parser.add_argument("--deadline", type=float, default=180.0, help="seconds for the run")
    parser.add_argument("--database-url", default=None)
    args = parser.parse_args()
    deadline = time.monotonic() + args.deadline
    with tempfile.TemporaryDirectory(prefix="gallery-reset-bench-") as directory:
        port = _free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("DATABASE_", "ADMIN_", "WEB_", "LOG_", "SMTP_", "RATE_"))
        }
        env.update(
            {
                "PYTHONPATH": str(ROOT),
                "ENVIRONMENT": "development",
                "SECRET_KEY": "bench-secret-key-that-is-long-enough-0123456789",
                "DATABASE_URL": args.database_url
                or f"sqlite+aiosqlite:///{Path(directory) / 'bench.db'}",
                "HOST": HOST,
                "PORT": str(port),
                "WEB_CONCURRENCY": "1",
                "RATE_LIMIT_ENABLED": "false",
                # Mail goes to the log without SMTP_HOST; the log is kept quiet.
                "LOG_LEVEL": "ERROR",
            }
        )
        log_path = Path(directory) / "server.log"
        with log_path.open("wb") as log_file:
            server = subprocess.Popen(
                [sys.executable, "-m", "app", "serve"],
                cwd=directory,
                env=env,
                stdout=log_file,
                stderr=subprocess.STDOUT,
            )
        try:
            result = measure(f"http://{HOST}:{port}", args.requests, args.warmup, deadline)
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
    print(json.dumps(result, indent=2))
    ratio = float(result["ratio"])  # type: ignore[arg-type]
    if ratio > 1 + args.tolerance:
        print(f"medians differ by more than {args.tolerance:.0%}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
