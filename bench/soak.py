"""Bounded load soak: the app under uvicorn with N workers on PostgreSQL, on loopback.

    .venv/bin/python -m bench.soak --seconds 60 --clients 64 --workers 2 \
        --database-url postgresql+asyncpg://postgres@127.0.0.1:5432/postgres

Creates a fresh database on that server (dropped afterwards), migrates it, starts a loopback
image host and uvicorn, then runs `clients` concurrent clients for `seconds` with a mix of
reads, creates, patches, deletes and logins. Reports status counts, connection errors,
per-worker RSS over time, and checks that every image acknowledged with 201 (and not deleted)
is still there. Exits non-zero when there is a 5xx, a connection error, a lost image or an
RSS climb after warm-up. Every request goes to 127.0.0.1; the loop stops by itself.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.conftest import (  # noqa: E402
    _create_postgres_database,
    _drop_postgres_database,
    migrate,
)
from tests.reliability.loopback_app import uvicorn_command  # noqa: E402
from tests.reliability.support import (  # noqa: E402
    PostgresCluster,
    free_port,
    postgres_bin_dir,
)
from tests.support.helpers import PASSWORD  # noqa: E402
from tests.support.image_host import ImageHost  # noqa: E402

SECRET = "soak-secret-key-that-is-long-enough-for-hs256-0123456789abcdef"  # noqa: S105
# Weighted mix of operations a client performs.
MIX = {
    "list_gallery": 30,
    "list_users": 10,
    "read_image": 15,
    "read_me": 5,
    "create": 20,
    "patch": 10,
    "delete": 7,
    "login": 3,
}


@dataclass
class Report:
    seconds: float = 0.0
    clients: int = 0
    workers: int = 0
    requests: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    by_operation: dict[str, int] = field(default_factory=dict)
    server_errors: int = 0
    connection_errors: int = 0
    unexpected: list[str] = field(default_factory=list)
    lost_images: int = 0
    acknowledged_images: int = 0
    requests_per_second: float = 0.0
    latency_ms_p50: float = 0.0
    latency_ms_p99: float = 0.0
    rss_mib: dict[str, dict[str, float]] = field(default_factory=dict)
    rss_growth_after_warmup_mib: float = 0.0
    # How far the last idle reading rises above every earlier idle reading after warm-up:
    # a leak makes each reading a new high; allocator arenas settling do not.
    rss_new_high_at_end_mib: float = 0.0
    ok: bool = False


def _workers(master: int) -> list[int]:
    """uvicorn's worker processes (not multiprocessing's resource tracker)."""
    workers = []
    for pid in _children(master):
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        except OSError:
            continue
        if b"spawn_main" in cmdline:
            workers.append(pid)
    return workers


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # ppid is the 2nd field after the parenthesised command name.
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry.name))
    return found


def _rss_mib(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


class Client:
    def __init__(self, http: httpx.AsyncClient, account: dict[str, Any], host: ImageHost) -> None:
        self.http = http
        self.account = account
        self.host = host
        self.images: dict[int, str] = {}  # id -> url, acknowledged and not deleted
        self.counter = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.account['token']}"}

    async def step(self, operation: str) -> tuple[int, set[int]]:
        """Do one operation; returns the status and the statuses that are fine for it."""
        uid = self.account["id"]
        if operation == "list_gallery":
            r = await self.http.get(f"/users/{uid}/images", params={"limit": 20})
            return r.status_code, {200}
        if operation == "list_users":
            r = await self.http.get("/users", params={"limit": 50})
            return r.status_code, {200}
        if operation == "read_me":
            r = await self.http.get("/users/me", headers=self.headers)
            return r.status_code, {200}
        if operation == "read_image" and self.images:
            image_id = random.choice(list(self.images))  # noqa: S311
            r = await self.http.get(f"/users/{uid}/images/{image_id}")
            return r.status_code, {200}
        if operation == "patch" and self.images:
            image_id = random.choice(list(self.images))  # noqa: S311
            r = await self.http.patch(
                f"/users/{uid}/images/{image_id}",
                json={"title": f"title {self.counter}"},
                headers=self.headers,
            )
            return r.status_code, {200}
        if operation == "delete" and self.images:
            image_id = random.choice(list(self.images))  # noqa: S311
            r = await self.http.delete(f"/users/{uid}/images/{image_id}", headers=self.headers)
            if r.status_code == 204:
                del self.images[image_id]
            return r.status_code, {204}
        if operation == "login":
            r = await self.http.post(
                "/accounts/login", json={"login": self.account["username"], "password": PASSWORD}
            )
            if r.status_code == 200:
                self.account["token"] = r.json()["access_token"]
            return r.status_code, {200}
        # create (also the fallback when there is nothing to read, patch or delete yet)
        self.counter += 1
        url = self.host.url(f"/cat.png?u={uid}&n={self.counter}&r={random.random()}")  # noqa: S311
        r = await self.http.post(
            f"/users/{uid}/images", json={"image_url": url}, headers=self.headers
        )
        if r.status_code == 201:
            self.images[r.json()["id"]] = url
        return r.status_code, {201}


async def _wait_ready(base_url: str, deadline: float) -> None:
    async with httpx.AsyncClient(base_url=base_url) as http:
        while time.monotonic() < deadline:
            try:
                if (await http.get("/users", params={"limit": 1})).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.2)
    raise RuntimeError("the server did not start")


async def run_soak(
    server_url: str,
    seconds: float,
    clients: int,
    workers: int,
    users: int = 16,
    warmup: float = 10.0,
) -> Report:
    """Run the soak: `warmup` seconds of load, then `seconds` more that are measured."""
    report = Report(seconds=seconds, clients=clients, workers=workers)
    database_url = await _create_postgres_database(server_url)
    host = ImageHost()
    host.start()
    process: subprocess.Popen[bytes] | None = None
    try:
        await migrate(database_url, "head")
        port = free_port()
        env = {
            **os.environ,
            "DATABASE_URL": database_url,
            "SECRET_KEY": SECRET,
            "ENVIRONMENT": "test",
            "IMAGE_FETCH_TIMEOUT": "10",
            "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
            # A load test, not an abuse test: the soak's clients sign in far more often
            # than the per-account login limit allows.
            "RATE_LIMIT_ENABLED": "false",
            "DATABASE_POOL_SIZE": "10",
            "ADMIN_USERNAME": "",
            "PYTHONPATH": str(ROOT),
            # glibc gives each thread that hashes a password its own malloc arena and keeps
            # it; two arenas keep idle RSS flat (measured: docs/reliability.md). Production
            # deployments should set the same.
            "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "2"),
        }
        # The server is started once, before the load: blocking here costs nothing.
        process = subprocess.Popen(  # noqa: S603, ASYNC220
            uvicorn_command(port, "--workers", str(workers), "--no-access-log"),
            cwd=ROOT,
            env=env,
        )
        base_url = f"http://127.0.0.1:{port}"
        await _wait_ready(base_url, time.monotonic() + 60)
        await _run_load(report, base_url, host, process.pid, seconds, clients, users, warmup)
    finally:
        if process is not None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        host.stop()
        await _drop_postgres_database(server_url, database_url)
    return report


async def _run_load(
    report: Report,
    base_url: str,
    host: ImageHost,
    master_pid: int,
    seconds: float,
    clients: int,
    users: int,
    warmup: float,
) -> None:
    # Idle connections expire on our side (2 s) well before uvicorn closes them (5 s), so a
    # request is never sent on a connection the server is closing at that moment.
    limits = httpx.Limits(
        max_connections=clients, max_keepalive_connections=clients, keepalive_expiry=2.0
    )
    async with httpx.AsyncClient(base_url=base_url, limits=limits, timeout=30) as http:
        accounts = []
        for n in range(users):
            name = f"soaker{n}"
            body = {
                "username": name,
                "email": f"{name}@example.com",
                "password": PASSWORD,
                "password_confirm": PASSWORD,
            }
            r = await http.post("/accounts/register", json=body)
            r.raise_for_status()
            token = (
                await http.post("/accounts/login", json={"login": name, "password": PASSWORD})
            ).json()["access_token"]
            accounts.append({"id": r.json()["id"], "username": name, "token": token})
        # One client per account slot; several clients may share an account's gallery view,
        # but each keeps its own images so its deletes and patches never race another's.
        workers_pids = _workers(master_pid) or [master_pid]
        samples: dict[int, list[tuple[float, float]]] = {pid: [] for pid in workers_pids}
        statuses: Counter[str] = Counter()
        operations: Counter[str] = Counter()
        latencies: list[float] = []
        names, weights = zip(*MIX.items(), strict=True)
        pool = [Client(http, dict(accounts[i % users]), host) for i in range(clients)]

        async def drive(client: Client, deadline: float) -> None:
            while time.monotonic() < deadline:
                operation = random.choices(names, weights)[0]  # noqa: S311
                t0 = time.monotonic()
                try:
                    status, fine = await client.step(operation)
                except httpx.TransportError as exc:
                    report.connection_errors += 1
                    report.unexpected.append(f"{operation}: {type(exc).__name__}: {exc}")
                    continue
                latencies.append(time.monotonic() - t0)
                statuses[str(status)] += 1
                operations[operation] += 1
                if status >= 500:
                    report.server_errors += 1
                if status not in fine and len(report.unexpected) < 50:
                    report.unexpected.append(f"{operation}: {status}")

        async def sample_rss(deadline: float) -> None:
            while time.monotonic() < deadline:
                for pid in samples:
                    rss = _rss_mib(pid)
                    if rss is not None:
                        samples[pid].append((time.monotonic() - started, rss))
                await asyncio.sleep(1.0)

        async def quiet_rss() -> dict[int, float]:
            # RSS under load swings by the 64 MiB of each password hash in flight; between
            # phases nothing is in flight, so these readings compare like with like.
            await asyncio.sleep(2.0)
            return {pid: _rss_mib(pid) or 0.0 for pid in samples}

        async def phase(length: float) -> None:
            deadline = time.monotonic() + length
            await asyncio.gather(sample_rss(deadline), *(drive(c, deadline) for c in pool))

        started = time.monotonic()
        await phase(warmup)
        after_warmup = await quiet_rss()
        before_main = sum(statuses.values())
        loaded = time.monotonic()
        await phase(seconds / 2)
        elapsed = time.monotonic() - loaded
        halfway = await quiet_rss()
        loaded = time.monotonic()
        await phase(seconds / 2)
        elapsed += time.monotonic() - loaded
        at_end = await quiet_rss()
        measured_requests = sum(statuses.values()) - before_main

        # Nothing acknowledged is lost: every image a client kept is in its owner's gallery.
        expected: dict[int, set[int]] = {}
        for client in pool:
            expected.setdefault(client.account["id"], set()).update(client.images)
        for user_id, image_ids in expected.items():
            listed: set[int] = set()
            cursor = None
            while True:
                params: dict[str, Any] = {"limit": 200}
                if cursor:
                    params["cursor"] = cursor
                body = (await http.get(f"/users/{user_id}/images", params=params)).json()
                listed |= {image["id"] for image in body["items"]}
                cursor = body["next_cursor"]
                if not cursor:
                    break
            report.lost_images += len(image_ids - listed)
            report.acknowledged_images += len(image_ids)

    report.requests = sum(statuses.values())
    report.statuses = dict(statuses)
    report.by_operation = dict(operations)
    report.requests_per_second = round(measured_requests / elapsed, 1)
    latencies.sort()
    if latencies:
        report.latency_ms_p50 = round(latencies[len(latencies) // 2] * 1000, 1)
        report.latency_ms_p99 = round(latencies[int(len(latencies) * 0.99)] * 1000, 1)
    growth = new_high = 0.0
    for pid, series in samples.items():
        report.rss_mib[str(pid)] = {
            "start": round(series[0][1], 1) if series else 0.0,
            "after_warmup_idle": round(after_warmup[pid], 1),
            "halfway_idle": round(halfway[pid], 1),
            "end_idle": round(at_end[pid], 1),
            "max_under_load": round(max((rss for _, rss in series), default=0.0), 1),
        }
        growth = max(growth, at_end[pid] - after_warmup[pid])
        new_high = max(new_high, at_end[pid] - max(after_warmup[pid], halfway[pid]))
    report.rss_growth_after_warmup_mib = round(growth, 1)
    report.rss_new_high_at_end_mib = round(new_high, 1)


def rss_is_flat(report: Report, allowed_mib: float) -> bool:
    """No worker's idle RSS at the end is a new high above its readings after warm-up."""
    return bool(report.rss_mib) and report.rss_new_high_at_end_mib <= allowed_mib


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--database-url",
        default=os.environ.get(
            "TEST_DATABASE_URL", "postgresql+asyncpg://postgres@127.0.0.1:5432/postgres"
        ),
        help="A PostgreSQL server URL whose user may create databases (loopback only).",
    )
    parser.add_argument(
        "--own-cluster",
        action="store_true",
        help="Start a throwaway PostgreSQL cluster on a free loopback port instead (initdb).",
    )
    parser.add_argument("--seconds", type=float, default=60, help="Measured load, after warm-up.")
    parser.add_argument("--warmup", type=float, default=30)
    parser.add_argument("--clients", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--rss-allowed-mib", type=float, default=24)
    parser.add_argument("--output", type=Path, help="Also write the report as JSON here.")
    args = parser.parse_args()
    cluster = None
    if args.own_cluster:
        bin_dir = postgres_bin_dir()
        if bin_dir is None:
            parser.error("initdb/pg_ctl not found")
        cluster = PostgresCluster(bin_dir)
        cluster.init()
        cluster.start()
        args.database_url = cluster.server_url
    try:
        report = asyncio.run(
            run_soak(
                args.database_url, args.seconds, args.clients, args.workers, warmup=args.warmup
            )
        )
    finally:
        if cluster is not None:
            cluster.destroy()
    report.ok = (
        report.server_errors == 0
        and report.connection_errors == 0
        and report.lost_images == 0
        and not report.unexpected
        and rss_is_flat(report, args.rss_allowed_mib)
    )
    text = json.dumps(asdict(report), indent=2)
    print(text)
    if args.output:
        args.output.write_text(text + "\n")
    sys.exit(0 if report.ok else 1)


if __name__ == "__main__":
    main()
