"""`make bench`: seed PostgreSQL, start the app, its floor and image hosts, drive them with wrk.

Everything runs on loopback: the database at BENCH_DATABASE_URL (must be a loopback
address), the app, the floor, the image hosts and wrk. Every wait and every load run is
bounded in time. See docs/performance.md for what each figure means.

    python -m bench.run                 # default: 1,000 users x 100 images, 5 s per run
    python -m bench.run --scale 1000000 --delete-test
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import ipaddress
import json
import os
import random
import secrets
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg
import httpx

from bench import stop_on_sigterm
from bench.floor import CursorCodec

ROOT = Path(__file__).resolve().parent.parent
BENCH_DIR = ROOT / "bench"
LUA_SCRIPT = BENCH_DIR / "lua" / "requests.lua"
DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/gallery_bench"
DB_MARKER = "gallery-api bench database"
# Part of the marker: a database seeded by an older harness (usernames keyed by their plain
# form, which sign-in no longer finds) is seeded again rather than reused.
SEED_VERSION = "seed-2"
PASSWORD = "bench-password-long-enough"  # noqa: S105 (seeded accounts on a throwaway database)
ADMIN_NAME = "benchadmin"
SIGNED_IN_USERS = 64
READ_SCENARIOS = (
    "users_page",
    "gallery_page",
    "gallery_deep",
    "image",
    "me",
    "admin_first",
    "admin_deep",
)
# Revalidation: gallery pages asked again with the ETag they were answered with (304s),
# replayed by their own wrk script; reported against `gallery_page` (app and floor).
REVALIDATE = "gallery_revalidate"
LUA_SCRIPTS = {REVALIDATE: BENCH_DIR / "lua" / "revalidate.lua"}
REVALIDATE_GALLERIES = 200


def log(message: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {message}", flush=True)


# --- Processes ---------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_http(url: str, deadline_s: float = 60.0) -> None:
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2.0).status_code < 500:
                return
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not answer within {deadline_s:.0f} s")


@contextlib.contextmanager
def running(
    command: list[str], env: dict[str, str], name: str, output: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process in its own process group, stopped (TERM, then KILL) on exit;
    its output goes to `output` when given."""
    with contextlib.ExitStack() as files:
        sink = files.enter_context(output.open("wb")) if output is not None else None
        process = subprocess.Popen(  # noqa: S603 (our own fixed command lines)
            command,
            env=env,
            cwd=tempfile.gettempdir(),
            start_new_session=True,
            stdout=sink,
            stderr=sink,
        )
    log(f"started {name} (pid {process.pid})")
    try:
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=5)


def worker_pids(master_pid: int) -> list[int]:
    """The uvicorn workers of `master_pid` (its spawned children); the master itself when it
    serves alone."""
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            if ppid == master_pid and b"spawn_main" in (entry / "cmdline").read_bytes():
                pids.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            continue
    return sorted(pids) or [master_pid]


def worker_rss_mb(master_pid: int) -> list[float]:
    """Resident memory of each uvicorn worker (the master's children), in MB."""
    rss = []
    for pid in worker_pids(master_pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss.append(int(line.split()[1]) / 1024)
    return sorted(rss)


TCP_ESTABLISHED = "01"


def established_inodes(tcp_table: str, port: int) -> set[str]:
    """The socket inodes of the connections established *to* `port`, from the text of
    /proc/net/tcp or /proc/net/tcp6 (local address `ADDR:PORT` in hex, state `01`)."""
    inodes = set()
    wanted = f"{port:04X}"
    for line in tcp_table.splitlines()[1:]:
        fields = line.split()
        local_port = fields[1].rsplit(":", 1)[-1] if len(fields) > 9 else None
        if local_port == wanted and fields[3] == TCP_ESTABLISHED:
            inodes.add(fields[9])
    return inodes


def connections_per_worker(master_pid: int, port: int) -> list[int]:
    """How many connections to `port` each worker holds, fewest first.

    The kernel hands a new connection to whichever worker accepts first, so how wrk's
    connections split between the workers changes from one run to the next (from 64/64 to
    28/100 at 128 connections), and the run's tail moves with it (docs/performance.md,
    "Fifth round")."""
    established: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            established |= established_inodes(Path(table).read_text(), port)
    counts = []
    for pid in worker_pids(master_pid):
        held = 0
        with contextlib.suppress(OSError):
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in established:
                        held += 1
        counts.append(held)
    return sorted(counts)


def tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU time of a process and all its descendants so far.

    CPU time per request is steadier than requests/s on a shared machine: other load slows
    a run down but does not make each request cost more instructions.
    """
    parents: dict[int, int] = {}
    cpu: dict[int, float] = {}
    ticks = os.sysconf("SC_CLK_TCK")
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(entry.name)
        parents[pid] = int(fields[1])
        cpu[pid] = (int(fields[11]) + int(fields[12])) / ticks
    total = 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor > 1 and ancestor != root_pid:
            ancestor = parents.get(ancestor, 0)
        if ancestor == root_pid:
            total += seconds
    return total


def settle(pids: list[int], deadline_s: float = 60.0) -> None:
    """Wait until the servers are idle: requests queued by the last run (wrk stops sending,
    but a server still works through what it accepted) must not count against the next."""
    end = time.monotonic() + deadline_s
    while time.monotonic() < end:
        before = sum(tree_cpu_seconds(pid) for pid in pids)
        time.sleep(0.5)
        if sum(tree_cpu_seconds(pid) for pid in pids) - before < 0.05:
            return
    log(f"servers still busy after {deadline_s:.0f} s; measuring anyway")


def ensure_wrk() -> str:
    found = shutil.which("wrk")
    if found:
        return found
    log("wrk is missing: installing Debian's package")
    prefix = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run([*prefix, "apt-get", "install", "-y", "-q", "wrk"], env=env).returncode:  # noqa: S603
        subprocess.run([*prefix, "apt-get", "update", "-q"], env=env, check=True)  # noqa: S603
        subprocess.run([*prefix, "apt-get", "install", "-y", "-q", "wrk"], env=env, check=True)  # noqa: S603
    found = shutil.which("wrk")
    if not found:
        raise RuntimeError("wrk could not be installed")
    return found


# --- Database ----------------------------------------------------------------------------


def asyncpg_dsn(url: str) -> str:
    return url.replace("postgresql+asyncpg://", "postgresql://", 1)


def ensure_loopback(url: str) -> None:
    host = urlsplit(asyncpg_dsn(url)).hostname or "127.0.0.1"
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise SystemExit(f"BENCH_DATABASE_URL must point at loopback, not {host!r}")


async def prepare_database(url: str, users: int, per_user: int, fresh: bool) -> bool:
    """Create (or reuse) the bench database; True when it must be migrated and seeded.

    Only a database this harness created (it carries our marker comment) is ever dropped.
    """
    parts = urlsplit(asyncpg_dsn(url))
    name = parts.path.lstrip("/")
    server = parts._replace(path="/postgres").geturl()
    marker = f"{DB_MARKER}: users={users} per_user={per_user} {SEED_VERSION}"
    connection = await asyncpg.connect(server)
    try:
        comment = await connection.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and not (comment or "").startswith(DB_MARKER):
            raise SystemExit(f"database {name!r} exists and was not made by the bench: refusing")
        if exists and comment == marker and not fresh:
            log(f"reusing database {name} ({marker})")
            return False
        if exists:
            log(f"dropping the bench's old database {name}")
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
        # The marker is set only once seeding is complete (see seed()).
        await connection.execute(f"COMMENT ON DATABASE \"{name}\" IS '{DB_MARKER}: seeding'")
    finally:
        await connection.close()
    return True


def migrate(url: str) -> None:
    log("migrating with alembic")
    env = {**os.environ, "DATABASE_URL": url}
    subprocess.run(  # noqa: S603
        [sys.executable, "-m", "alembic", "-c", str(ROOT / "alembic.ini"), "upgrade", "head"],
        cwd=ROOT,
        env=env,
        check=True,
        timeout=300,
    )


def password_hash() -> str:
    from app.accounts.security import make_crypt_context

    return str(make_crypt_context().hash(PASSWORD))


async def seed(url: str, users: int, per_user: int) -> None:
    from app.users.identity_keys import username_key

    log(f"seeding {users} users x {per_user} images in bulk")
    started = time.monotonic()
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with connection.transaction():
            await connection.execute(
                """
                INSERT INTO users (username, username_key, email, email_key, password_hash,
                                   is_active, is_admin, date_joined)
                SELECT 'user' || g, ($3::text[])[g], 'user' || g || '@example.com',
                       'user' || g || '@example.com', $1, true, false,
                       now() - make_interval(mins => $2 - g)
                FROM generate_series(1, $2) AS g
                """,
                password_hash(),
                users,
                # Sign-in finds a user by the key of the name (since issue 12, the TR39
                # skeleton: `user1` -> `userl`), so the seed stores the app's own keys.
                [username_key(f"user{g}") for g in range(1, users + 1)],
            )
            await connection.execute(
                """
                INSERT INTO users (username, username_key, email, email_key, password_hash,
                                   is_active, is_admin, date_joined)
                VALUES ($2::text, $3::text, $2::text || '@example.com',
                        $2::text || '@example.com', $1, true, true, now())
                """,
                password_hash(),
                ADMIN_NAME,
                username_key(ADMIN_NAME),
            )
            # Ids interleave users, as real uploads do: a gallery is spread over the table.
            await connection.execute(
                """
                INSERT INTO images (user_id, image_url, title, content_type, size_bytes,
                                    width, height, checked_at, created_at, updated_at, due_at)
                SELECT u.id, 'http://127.0.0.1/seed/' || u.id || '/' || n || '.png',
                       'Picture ' || n, 'image/png', 1000 + n, 640, 480,
                       now() - make_interval(secs => $1 - n),
                       now() - make_interval(secs => $1 - n), now() - make_interval(secs => $1 - n),
                       now() - make_interval(secs => $1 - n) + interval '1 day'
                FROM generate_series(1, $1) AS n CROSS JOIN users AS u
                WHERE NOT u.is_admin
                ORDER BY n, u.id
                """,
                per_user,
            )
        await connection.execute("ANALYZE")
        name = urlsplit(asyncpg_dsn(url)).path.lstrip("/")
        marker = f"{DB_MARKER}: users={users} per_user={per_user} {SEED_VERSION}"
        await connection.execute(f"COMMENT ON DATABASE \"{name}\" IS '{marker}'")
    finally:
        await connection.close()
    log(f"seeded in {time.monotonic() - started:.1f} s")


@dataclass
class Fixture:
    """Ids and cursors the scenarios replay, read from the seeded database."""

    user_ids: list[int]
    images: list[tuple[int, int]]  # (user_id, image_id)
    deep_image_id: int
    gallery_deep: list[tuple[int, int]]  # (user_id, last_id at 90% depth)
    image_count: int


async def load_fixture(url: str, per_user: int) -> Fixture:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        user_ids = [
            r["id"]
            for r in await connection.fetch(
                "SELECT id FROM users WHERE NOT is_admin ORDER BY id LIMIT 1000"
            )
        ]
        count = await connection.fetchval("SELECT count(*) FROM images")
        images = [
            (r["user_id"], r["id"])
            for r in await connection.fetch(
                "SELECT user_id, id FROM images TABLESAMPLE SYSTEM (5) LIMIT 1000"
            )
        ] or [
            (r["user_id"], r["id"])
            for r in await connection.fetch("SELECT user_id, id FROM images LIMIT 1000")
        ]
        deep = await connection.fetchval(
            "SELECT id FROM images ORDER BY id DESC OFFSET $1 LIMIT 1", int(count * 0.9)
        )
        gallery_deep = []
        for user_id in user_ids[:100]:
            last = await connection.fetchval(
                "SELECT id FROM images WHERE user_id = $1 ORDER BY id DESC OFFSET $2 LIMIT 1",
                user_id,
                int(per_user * 0.9),
            )
            if last is not None:
                gallery_deep.append((user_id, last))
    finally:
        await connection.close()
    return Fixture(user_ids, images, deep, gallery_deep, count)


# --- Requests ----------------------------------------------------------------------------


@dataclass
class Tokens:
    users: dict[int, str]
    admin: str


def sign_in(base_url: str, user_ids: list[int]) -> Tokens:
    """Tokens through the real login endpoint, so token changes in the app need no change here."""
    log(f"signing in {len(user_ids)} users and the admin")
    with httpx.Client(base_url=base_url, timeout=30) as client:

        def login(name: str) -> str:
            response = client.post("/accounts/login", json={"login": name, "password": PASSWORD})
            response.raise_for_status()
            return str(response.json()["access_token"])

        tokens = {user_id: login(f"user{user_id}") for user_id in user_ids}
        return Tokens(tokens, login(ADMIN_NAME))


Line = tuple[str, str, str, str]  # method, path, token, body


def build_requests(
    fixture: Fixture, tokens: Tokens, cursors: CursorCodec, image_hosts: dict[int, int]
) -> dict[str, list[Line]]:
    rng = random.Random(6)  # noqa: S311 (load shapes, not secrets)
    signed_in = list(tokens.users)
    deep_cursor = cursors.encode("images:None", fixture.deep_image_id)
    # Every seeded user is named user<id>; first-page gallery reads spread over all of them.
    scenarios: dict[str, list[Line]] = {
        "users_page": [("GET", "/users?limit=50", "-", "-")],
        "gallery_page": [
            ("GET", f"/users/{u}/images?limit=50", "-", "-") for u in fixture.user_ids
        ],
        "gallery_deep": [
            (
                "GET",
                f"/users/{u}/images?limit=50&cursor={cursors.encode(f'user-images:{u}', last)}",
                "-",
                "-",
            )
            for u, last in fixture.gallery_deep
        ],
        "image": [("GET", f"/users/{u}/images/{i}", "-", "-") for u, i in fixture.images],
        "me": [("GET", "/users/me", tokens.users[u], "-") for u in signed_in],
        "admin_first": [("GET", "/images?limit=50", tokens.admin, "-")],
        "admin_deep": [("GET", f"/images?limit=50&cursor={deep_cursor}", tokens.admin, "-")],
        "login": [
            (
                "POST",
                "/accounts/login",
                "-",
                json.dumps({"login": f"user{u}", "password": PASSWORD}),
            )
            for u in signed_in
        ],
    }
    for latency, port in image_hosts.items():
        scenarios[f"create_{latency}ms"] = [
            (
                "POST",
                f"/users/{u}/images",
                tokens.users[u],
                json.dumps(
                    {"image_url": f"http://127.0.0.1:{port}/bench/{{n}}.png", "title": "Bench {n}"}
                ),
            )
            for u in signed_in
        ]
    # The mixed workload: mostly gallery reads, some profile and admin reads, a few creates.
    weights = {
        "gallery_page": 45,
        "image": 20,
        "me": 10,
        "users_page": 10,
        "admin_deep": 5,
        "gallery_deep": 5,
        f"create_{min(image_hosts)}ms": 5,
    }
    mixed = [
        rng.choice(scenarios[name]) for name, weight in weights.items() for _ in range(weight * 4)
    ]
    rng.shuffle(mixed)
    scenarios["mixed"] = mixed
    for lines in scenarios.values():
        rng.shuffle(lines)
    return scenarios


def revalidation_requests(app_url: str, pages: list[Line]) -> list[Line]:
    """`gallery_page` lines with the ETag each page has now, in the TOKEN-then-ETAG shape
    bench/lua/revalidate.lua reads; every one is checked to answer 304 first."""
    lines = []
    with httpx.Client(base_url=app_url, timeout=30) as client:
        for method, path, token, _ in pages[:REVALIDATE_GALLERIES]:
            etag = client.request(method, path).headers["ETag"]
            again = client.request(method, path, headers={"If-None-Match": etag})
            if again.status_code != 304:
                raise RuntimeError(f"{path} answered {again.status_code} to its own ETag")
            lines.append((method, path, token, etag))
    log(f"{len(lines)} gallery pages answer 304 to their ETags")
    return lines


def write_request_file(directory: Path, name: str, lines: list[Line]) -> Path:
    path = directory / f"{name}.tsv"
    path.write_text("".join("\t".join(line) + "\n" for line in lines))
    return path


def check_identical(
    app_url: str, floor_url: str, lines: list[Line], samples: int = 5
) -> dict[str, Any]:
    """Fetch the same requests from the app and the floor; the bodies must match byte for byte."""
    mismatches = []
    checked = 0
    with httpx.Client(timeout=30) as client:
        for method, path, bearer, _ in lines[:samples]:
            headers = {} if bearer == "-" else {"Authorization": f"Bearer {bearer}"}
            ours = client.request(method, app_url + path, headers=headers)
            floor = client.request(method, floor_url + path, headers=headers)
            checked += 1
            if ours.status_code != 200 or ours.content != floor.content:
                mismatches.append(
                    {
                        "path": path,
                        "app_status": ours.status_code,
                        "floor_status": floor.status_code,
                        "app": ours.text[:300],
                        "floor": floor.text[:300],
                    }
                )
    return {"checked": checked, "identical": not mismatches, "mismatches": mismatches}


# --- Load --------------------------------------------------------------------------------


@dataclass
class Run:
    scenario: str
    target: str
    connections: int
    duration_s: float
    requests: int
    rps: float
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    cpu_us_per_request: float
    errors: dict[str, int] = field(default_factory=dict)
    # wrk's connections held by each worker half-way through the run, fewest first.
    connections_per_worker: list[int] = field(default_factory=list)
    # Reads measured in paired rounds against the framework floor: each round's figures,
    # and for the app the ratios to the framework floor (`vs_framework`, see `paired`).
    rounds: list[dict[str, Any]] = field(default_factory=list)
    vs_framework: dict[str, float] = field(default_factory=dict)


def wrk(
    wrk_path: str,
    url: str,
    request_file: Path,
    connections: int,
    duration: float,
    threads: int,
    midway: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """One wrk run; `midway`, when given, is called half-way through it and its answer
    returned as the result's `midway`."""
    command = [
        wrk_path,
        f"-t{min(threads, connections)}",
        f"-c{connections}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "20s",
        "-s",
        str(LUA_SCRIPTS.get(request_file.stem, LUA_SCRIPT)),
        url,
        "--",
        str(request_file),
        secrets.token_hex(4),
    ]
    with subprocess.Popen(  # noqa: S603
        command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    ) as process:
        sample = None
        if midway is not None:
            time.sleep(duration / 2)
            sample = midway()
        try:
            stdout, stderr = process.communicate(timeout=duration + 60)
        except subprocess.TimeoutExpired:
            process.kill()
            stdout, stderr = process.communicate()
    for line in stdout.splitlines():
        if line.startswith("BENCH_RESULT "):
            result: dict[str, Any] = json.loads(line.removeprefix("BENCH_RESULT "))
            if midway is not None:
                result["midway"] = sample
            return result
    raise RuntimeError(f"wrk gave no result: {stdout}\n{stderr}")


def measure(
    wrk_path: str,
    scenario: str,
    target: str,
    url: str,
    request_file: Path,
    connections: int,
    duration: float,
    threads: int,
    server_pid: int,
) -> Run:
    settle([server_pid])
    cpu_before = tree_cpu_seconds(server_pid)
    port = urlsplit(url).port or 80
    raw = wrk(
        wrk_path,
        url,
        request_file,
        connections,
        duration,
        threads,
        midway=lambda: connections_per_worker(server_pid, port),
    )
    cpu = tree_cpu_seconds(server_pid) - cpu_before
    seconds = raw["duration_us"] / 1e6
    errors = {k.removeprefix("errors_"): v for k, v in raw.items() if k.startswith("errors_") and v}
    run = Run(
        scenario=scenario,
        target=target,
        connections=connections,
        duration_s=round(seconds, 2),
        requests=raw["requests"],
        rps=round(raw["requests"] / seconds, 1),
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        cpu_us_per_request=round(cpu * 1e6 / max(1, raw["requests"]), 1),
        errors=errors,
        connections_per_worker=raw["midway"],
    )
    log(
        f"{scenario:<13} {target:<5} c={connections:<4} {run.rps:>9.1f} req/s  "
        f"p50 {run.p50_ms:7.2f} ms  p99 {run.p99_ms:7.2f} ms  "
        f"cpu {run.cpu_us_per_request:6.0f} us/req  "
        f"per worker {'/'.join(map(str, run.connections_per_worker))}"
        + (f"  errors {errors}" if errors else "")
    )
    return run


def hash_seconds(samples: int = 5) -> float:
    """One password verification on this machine, single-threaded (median of a few)."""
    from app.accounts.security import make_crypt_context

    context = make_crypt_context()
    stored = context.hash(PASSWORD)
    times = []
    for _ in range(samples):
        started = time.perf_counter()
        context.verify(PASSWORD, stored)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def hashes_per_second_all_cores(seconds: float = 3.0) -> float:
    """Verifications per second with one hashing thread per core, for `seconds` (Argon2
    releases the GIL). Two hashes at once are slower than one alone (shared caches and
    memory bandwidth), so this is what the hash really allows, below cores / one hash."""
    from app.accounts.security import make_crypt_context

    context = make_crypt_context()
    stored = context.hash(PASSWORD)
    deadline = time.perf_counter() + seconds

    def hash_until_deadline() -> int:
        count = 0
        while time.perf_counter() < deadline:
            context.verify(PASSWORD, stored)
            count += 1
        return count

    started = time.perf_counter()
    cores = os.cpu_count() or 1
    with concurrent.futures.ThreadPoolExecutor(cores) as pool:
        total = sum(pool.map(lambda _: hash_until_deadline(), range(cores)))
    return total / (time.perf_counter() - started)


async def delete_test(base_url: str, admin_token: str, user_ids: list[int]) -> dict[str, Any]:
    """DELETE /images while 8 readers page through galleries: how long are reads held up?"""
    log("delete test: DELETE /images under gallery reads")
    samples: list[tuple[float, float, int]] = []  # (start offset, latency, status)
    done = asyncio.Event()
    origin = time.monotonic()
    rng = random.Random(7)  # noqa: S311
    async with httpx.AsyncClient(base_url=base_url, timeout=120) as client:

        async def reader() -> None:
            deadline = time.monotonic() + 900  # bounded even if the delete never ends
            while not done.is_set() and time.monotonic() < deadline:
                started = time.monotonic()
                response = await client.get(f"/users/{rng.choice(user_ids)}/images?limit=50")
                samples.append((started - origin, time.monotonic() - started, response.status_code))

        readers = [asyncio.create_task(reader()) for _ in range(8)]
        await asyncio.sleep(2)
        delete_started = time.monotonic()
        response = await client.delete(
            "/images", headers={"Authorization": f"Bearer {admin_token}"}, timeout=900
        )
        delete_seconds = time.monotonic() - delete_started
        await asyncio.sleep(1)
        done.set()
        await asyncio.gather(*readers)
    start_offset = delete_started - origin
    during = [s for s in samples if start_offset <= s[0] <= start_offset + delete_seconds]
    before = [s for s in samples if s[0] < start_offset]
    result = {
        "status": response.status_code,
        "delete_seconds": round(delete_seconds, 2),
        "reads_during": len(during),
        "read_errors_during": sum(1 for s in during if s[2] != 200),
        "read_max_ms_during": round(max((s[1] for s in during), default=0) * 1000, 1),
        "read_p50_ms_during": round(statistics.median([s[1] for s in during]) * 1000, 1)
        if during
        else None,
        "read_p50_ms_before": round(statistics.median([s[1] for s in before]) * 1000, 1)
        if before
        else None,
    }
    log(f"delete test: {result}")
    return result


# --- Main --------------------------------------------------------------------------------


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--scale", type=int, default=100_000, help="total images (default 100,000)")
    parser.add_argument(
        "--duration", type=float, default=float(os.environ.get("BENCH_DURATION", 5))
    )
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument(
        "--rounds",
        type=int,
        default=int(os.environ.get("BENCH_ROUNDS", 7)),
        help="paired app/framework-floor rounds per read scenario and connection count",
    )
    parser.add_argument("--connections", default="32,128")
    parser.add_argument(
        "--workers", type=int, default=int(os.environ.get("WEB_CONCURRENCY", os.cpu_count() or 1))
    )
    parser.add_argument(
        "--pool-size", type=int, default=int(os.environ.get("DATABASE_POOL_SIZE", 10))
    )
    parser.add_argument("--latencies", default="0,100", help="image host latencies in ms")
    parser.add_argument("--scenarios", default="all", help="comma-separated subset")
    parser.add_argument("--fresh", action="store_true", help="re-create and re-seed the database")
    parser.add_argument("--delete-test", action="store_true", help="finish with DELETE /images")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results")
    parser.add_argument("--label", default="", help="a word for the result file names")
    return parser.parse_args()


@dataclass(frozen=True)
class Plan:
    """What one bench run does, read from the command line and the environment."""

    args: argparse.Namespace
    database_url: str
    wrk_path: str
    per_user: int
    connections: list[int]
    latencies: list[int]
    wanted: set[str] | None
    threads: int

    def selected(self, scenario: str) -> bool:
        return self.wanted is None or scenario in self.wanted


def make_plan(args: argparse.Namespace) -> Plan:
    database_url = os.environ.get("BENCH_DATABASE_URL", DEFAULT_DATABASE_URL)
    ensure_loopback(database_url)
    return Plan(
        args=args,
        database_url=database_url,
        wrk_path=ensure_wrk(),
        per_user=max(1, args.scale // args.users),
        connections=[int(c) for c in args.connections.split(",")],
        latencies=[int(x) for x in args.latencies.split(",")],
        wanted=None if args.scenarios == "all" else set(args.scenarios.split(",")),
        threads=os.cpu_count() or 1,
    )


def prepare_fixture(plan: Plan) -> Fixture:
    """Seed the database when it is new or was emptied, then read back what it holds."""
    url, args = plan.database_url, plan.args
    if asyncio.run(prepare_database(url, args.users, plan.per_user, args.fresh)):
        migrate(url)
        asyncio.run(seed(url, args.users, plan.per_user))
    fixture = asyncio.run(load_fixture(url, plan.per_user))
    log(f"{len(fixture.user_ids)} users, {fixture.image_count} images")
    return fixture


@dataclass(frozen=True)
class Servers:
    """The processes under load: the app, its two floors (raw ASGI + asyncpg, and FastAPI +
    AsyncSession), and one image host per latency."""

    app_url: str
    app_pid: int
    floor_url: str
    floor_pid: int
    framework_url: str
    framework_pid: int
    image_hosts: dict[int, int]  # latency in ms -> port


# What the servers inherit from the shell that started the bench: where programs and
# temporary files are, and the locale. Nothing else: a LOG_FORMAT, LOG_LEVEL or any other
# setting exported in that shell would change what is measured (a JSON access line costs
# more than the text one), so every setting the app runs with is the bench's own, below.
INHERITED_ENVIRONMENT = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR", "TZ")


def server_environments(plan: Plan, secret: str) -> tuple[dict[str, str], dict[str, str]]:
    """The environment of the image hosts and the floor (common), and of the app."""
    common = {
        **{name: os.environ[name] for name in INHERITED_ENVIRONMENT if name in os.environ},
        "SECRET_KEY": secret,
        "DATABASE_POOL_SIZE": str(plan.args.pool_size),
        "PYTHONPATH": str(ROOT),
    }
    app_env = {
        **common,
        "ENVIRONMENT": "production",
        "DATABASE_URL": plan.database_url,
        "ACCESS_TOKEN_EXPIRE_MINUTES": "240",
        "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
        "IMAGE_FETCH_TIMEOUT": "10",
        "WEB_CONCURRENCY": str(plan.args.workers),
        # The login scenario measures throughput; the abuse limits would cap it at
        # RATE_LIMIT_LOGIN_PER_ACCOUNT and answer 429 instead.
        "RATE_LIMIT_ENABLED": "false",
        # The seeded URLs point nowhere; scheduled rechecks (due a day after seeding, so
        # a reused seed would have them all due) are measured by bench/recheck.py instead.
        "RECHECK_IN_PROCESS": "false",
        # What operators turn on, so the bench pays for it: the Host check (wrk sends
        # 127.0.0.1:<port>) and the proxy rule (loopback is the trusted proxy).
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "TRUSTED_PROXIES": "127.0.0.1/32",
    }
    return common, app_env


def start_servers(stack: contextlib.ExitStack, plan: Plan, secret: str) -> Servers:
    """Start every server (stopped when `stack` closes) and wait until each answers."""
    common, app_env = server_environments(plan, secret)
    app_port, floor_port = free_port(), free_port()
    image_hosts = {latency: free_port() for latency in plan.latencies}
    for latency, port in image_hosts.items():
        stack.enter_context(
            running(
                [sys.executable, "-m", "bench.image_host",
                 "--port", str(port), "--latency-ms", str(latency)],
                common,
                f"image host {latency} ms",
            )
        )  # fmt: skip
    # The app runs as deployed (`gallery serve`: its logging with one access line per
    # request, multiprocess metrics, proxy headers); its log goes to a file.
    app_log = Path(tempfile.gettempdir()) / "gallery-bench-app.log"
    app_process = stack.enter_context(
        running(
            [str(Path(sys.executable).with_name("gallery")), "serve", "--no-migrate"],
            {**app_env, "HOST": "127.0.0.1", "PORT": str(app_port)},
            f"app (log: {app_log})",
            output=app_log,
        )
    )
    floor_command = [
        sys.executable, "-m", "uvicorn", "bench.floor:app",
        "--host", "127.0.0.1", "--port", str(floor_port), "--workers", str(plan.args.workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    floor_env = {**common, "BENCH_FLOOR_DSN": asyncpg_dsn(plan.database_url)}
    floor_process = stack.enter_context(running(floor_command, floor_env, "floor"))
    framework_port, framework_process = start_framework_floor(stack, plan, app_env)
    servers = Servers(
        app_url=f"http://127.0.0.1:{app_port}",
        app_pid=app_process.pid,
        floor_url=f"http://127.0.0.1:{floor_port}",
        floor_pid=floor_process.pid,
        framework_url=f"http://127.0.0.1:{framework_port}",
        framework_pid=framework_process.pid,
        image_hosts=image_hosts,
    )
    for port in image_hosts.values():
        wait_for_http(f"http://127.0.0.1:{port}/ready.png")
    wait_for_http(f"{servers.app_url}/users?limit=1")
    wait_for_http(f"{servers.floor_url}/users?limit=1")
    wait_for_http(f"{servers.framework_url}/users?limit=1")
    return servers


def start_framework_floor(
    stack: contextlib.ExitStack, plan: Plan, app_env: dict[str, str]
) -> tuple[int, subprocess.Popen[bytes]]:
    """The framework floor (bench/framework_floor.py) under plain uvicorn like the raw floor,
    with the app's settings (same database, secret, pool size) and worker count."""
    port = free_port()
    command = [
        sys.executable, "-m", "uvicorn", "bench.framework_floor:create_app", "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--workers", str(plan.args.workers),
        "--no-access-log", "--log-level", "warning",
    ]  # fmt: skip
    return port, stack.enter_context(running(command, app_env, "framework floor"))


def check_byte_identity(
    plan: Plan, servers: Servers, scenarios: dict[str, list[Line]]
) -> dict[str, Any]:
    """For each read scenario: do the app and each floor answer byte-identical bodies?
    (`byte_identity` for the raw floor, `byte_identity_framework` for the framework floor.)"""
    identity: dict[str, Any] = {"byte_identity": {}, "byte_identity_framework": {}}
    floors = {"byte_identity": servers.floor_url, "byte_identity_framework": servers.framework_url}
    for name in READ_SCENARIOS:
        if not plan.selected(name):
            continue
        for key, floor_url in floors.items():
            identity[key][name] = check_identical(servers.app_url, floor_url, scenarios[name])
            log(f"byte-identical {name} ({key}): {identity[key][name]['identical']}")
    return identity


def load_scenario(plan: Plan, servers: Servers, name: str, request_file: Path) -> list[Run]:
    """Warm up, then measure one scenario at every connection count.

    Reads are measured against the framework floor in `--rounds` paired rounds, the order
    alternating (app first, then the floor first, ...), so a burst of other load on a shared
    machine falls on both sides of a pair; each figure is the median of its rounds and each
    app/framework ratio the median of the per-round ratios. The raw floor runs once."""
    args = plan.args
    app = ("app", servers.app_url, servers.app_pid)
    framework = ("framework", servers.framework_url, servers.framework_pid)
    floor = ("floor", servers.floor_url, servers.floor_pid)
    read = name in READ_SCENARIOS
    targets = [app, framework, floor] if read else [app]
    for _, url, _ in targets:
        if args.warmup > 0:
            wrk(plan.wrk_path, url, request_file, plan.connections[0], args.warmup, plan.threads)

    def one(target: tuple[str, str, int], conns: int) -> Run:
        label, url, pid = target
        return measure(
            plan.wrk_path, name, label, url, request_file, conns, args.duration, plan.threads, pid
        )

    runs = []
    for conns in plan.connections:
        if not read:
            runs.append(one(app, conns))
            continue
        pairs = []
        for number in range(max(1, args.rounds)):
            pair = (app, framework) if number % 2 == 0 else (framework, app)
            measured = {target[0]: one(target, conns) for target in pair}
            pairs.append((measured["app"], measured["framework"]))
        runs.extend(paired(pairs))
        runs.append(one(floor, conns))
    return runs


ROUND_FIGURES = ("rps", "p50_ms", "p99_ms", "cpu_us_per_request", "connections_per_worker")


def paired(pairs: list[tuple[Run, Run]]) -> list[Run]:
    """The app's and the framework floor's runs of one scenario and connection count, each
    the median of its rounds, the app's with its ratios to the floor (`vs_framework`).

    Throughput and CPU: the median of the per-round ratios. A burst of other load on the
    machine slows both sides of a pair, and the ratio cancels it.

    p99: the ratio of the two sides' median p99s. A run's tail moves with one-off events
    of that run (above all how the kernel split wrk's connections between the workers,
    drawn again for every run), which the two sides of a pair do not share, so a
    per-round ratio carries both sides' draws; the median of each side's rounds settles
    them first. The median of the per-round ratios stays in the results as
    `p99_ms_per_round` (docs/performance.md, "Fifth round": two copies of the same server
    were 0.68x to 2.0x apart in p99 round by round)."""
    result = []
    for side in (0, 1):
        runs = [pair[side] for pair in pairs]
        errors: dict[str, int] = {}
        for run in runs:
            for kind, count in run.errors.items():
                errors[kind] = errors.get(kind, 0) + count
        result.append(
            Run(
                scenario=runs[0].scenario,
                target=runs[0].target,
                connections=runs[0].connections,
                duration_s=round(sum(run.duration_s for run in runs), 2),
                requests=sum(run.requests for run in runs),
                rps=statistics.median(run.rps for run in runs),
                p50_ms=statistics.median(run.p50_ms for run in runs),
                p90_ms=statistics.median(run.p90_ms for run in runs),
                p99_ms=statistics.median(run.p99_ms for run in runs),
                max_ms=max(run.max_ms for run in runs),
                cpu_us_per_request=statistics.median(run.cpu_us_per_request for run in runs),
                errors=errors,
                rounds=[{key: getattr(run, key) for key in ROUND_FIGURES} for run in runs],
            )
        )
    app, framework = result

    def per_round(key: str) -> float:
        ratios = [
            float(getattr(a, key)) / float(getattr(f, key)) for a, f in pairs if getattr(f, key)
        ]
        return round(statistics.median(ratios), 3)

    app.vs_framework = {
        "rps": per_round("rps"),
        "p99_ms": round(app.p99_ms / framework.p99_ms, 3) if framework.p99_ms else 0.0,
        "p99_ms_per_round": per_round("p99_ms"),
        "cpu_us_per_request": per_round("cpu_us_per_request"),
    }
    log(
        f"{app.scenario:<13} paired c={app.connections:<4} app/framework over {len(pairs)} "
        f"rounds: req/s {app.vs_framework['rps']:.2f}, p99 {app.vs_framework['p99_ms']:.2f}, "
        f"cpu {app.vs_framework['cpu_us_per_request']:.2f}"
    )
    return result


def load_all(
    plan: Plan, servers: Servers, files: dict[str, Path], results: dict[str, Any]
) -> list[Run]:
    """Every selected scenario in order; the workers' memory after the mixed load."""
    order = [
        *READ_SCENARIOS,
        REVALIDATE,
        *(f"create_{x}ms" for x in plan.latencies),
        "login",
        "mixed",
    ]
    runs: list[Run] = []
    for name in order:
        if not plan.selected(name):
            continue
        runs.extend(load_scenario(plan, servers, name, files[name]))
        if name == "mixed":
            rss = [round(x, 1) for x in worker_rss_mb(servers.app_pid)]
            results["worker_rss_mb_after_mixed"] = rss
            log(f"worker RSS after mixed: {rss} MB")
    if "worker_rss_mb_after_mixed" not in results:
        results["worker_rss_mb"] = [round(x, 1) for x in worker_rss_mb(servers.app_pid)]
    return runs


def run_against_servers(plan: Plan, fixture: Fixture, results: dict[str, Any]) -> list[Run]:
    """Start the servers, check byte identity, load every scenario, and the delete test."""
    secret = secrets.token_urlsafe(48)
    with contextlib.ExitStack() as stack:
        servers = start_servers(stack, plan, secret)
        tokens = sign_in(servers.app_url, fixture.user_ids[:SIGNED_IN_USERS])
        codec = CursorCodec(secret.encode())
        scenarios = build_requests(fixture, tokens, codec, servers.image_hosts)
        if plan.selected(REVALIDATE):
            scenarios[REVALIDATE] = revalidation_requests(
                servers.app_url, scenarios["gallery_page"]
            )
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="gallery-bench-")))
        files = {
            name: write_request_file(workdir, name, lines) for name, lines in scenarios.items()
        }
        results.update(check_byte_identity(plan, servers, scenarios))
        runs = load_all(plan, servers, files, results)
        if plan.args.delete_test:
            delete = delete_test(servers.app_url, tokens.admin, fixture.user_ids)
            results["delete"] = asyncio.run(delete)
            asyncio.run(mark_database_unseeded(plan.database_url))
    return runs


def password_hash_figures() -> dict[str, Any]:
    """What one password hash costs here, and the login rate it bounds."""
    seconds = hash_seconds()
    cores = os.cpu_count() or 1
    return {
        "seconds": round(seconds, 4),
        "cores": cores,
        "logins_per_second_bound": round(cores / seconds, 1),
        "hashes_per_second_all_cores": round(hashes_per_second_all_cores(), 1),
    }


def write_results(plan: Plan, fixture: Fixture, runs: list[Run], results: dict[str, Any]) -> None:
    """The run's document, with what was measured and on what, as JSON and a report."""
    args = plan.args
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    git = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    document = {
        "meta": {
            "started": stamp,
            "users": args.users,
            "images": fixture.image_count,
            "workers": args.workers,
            "pool_size": args.pool_size,
            "duration_s": args.duration,
            "connections": plan.connections,
            "cores": os.cpu_count() or 1,
            "python": sys.version.split()[0],
            "git": git.stdout.strip(),
        },
        "runs": [asdict(run) for run in runs],
        **results,
    }
    from bench.report import write_report

    args.output.mkdir(parents=True, exist_ok=True)
    name = f"{stamp}{'-' + args.label if args.label else ''}"
    write_report(document, args.output, name)


def main() -> None:
    stop_on_sigterm()
    plan = make_plan(parse_args())
    fixture = prepare_fixture(plan)
    results: dict[str, Any] = {}
    runs = run_against_servers(plan, fixture, results)
    results["password_hash"] = password_hash_figures()
    write_results(plan, fixture, runs, results)


async def mark_database_unseeded(url: str) -> None:
    """After the delete test the data is gone: the next run must seed again."""
    name = urlsplit(asyncpg_dsn(url)).path.lstrip("/")
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(f"COMMENT ON DATABASE \"{name}\" IS '{DB_MARKER}: emptied'")
    finally:
        await connection.close()


if __name__ == "__main__":
    main()
