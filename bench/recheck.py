"""`make bench`, link health part: what rechecks cost, as ratios measured in one run.

1. CPU per check: `ImageChecker.check` in-process against the loopback image host, this
   tree against the checker before issue 13 (`--before-ref`), alternating rounds.
2. A recheck pass over `--images` due images (PostgreSQL, one worker process, the default
   RECHECK_CONCURRENCY and RECHECK_PER_HOST_CONCURRENCY over `--hosts` host names) against
   a floor doing the same HEAD + range GET with a bare asyncio loop and no database, at the
   same concurrency: rechecks per second, the pass time, what a million images a day costs.
3. Gallery-page throughput (`gallery serve`, one process, wrk) with the in-process worker
   rechecking at full speed (every image due, RECHECK_PER_HOST_CONCURRENCY equal to
   RECHECK_CONCURRENCY: one loopback host) against the same with rechecks off.

Everything is on loopback: the database at BENCH_RECHECK_DATABASE_URL (created for the run,
marked, dropped at the end), the image host, the app and wrk. Every run is bounded.

    python -m bench.recheck                      # 100,000 images
    python -m bench.recheck --images 20000 --skip-pages
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import asyncpg

from bench import stop_on_sigterm
from bench.run import (
    BENCH_DIR,
    ROOT,
    asyncpg_dsn,
    ensure_loopback,
    ensure_wrk,
    free_port,
    log,
    migrate,
    running,
    tree_cpu_seconds,
    wait_for_http,
    write_request_file,
    wrk,
)

DEFAULT_DATABASE_URL = "postgresql+asyncpg://postgres@127.0.0.1:5432/gallery_recheck_bench"
DB_MARKER = "gallery-api recheck bench database"
# The checker as it was before issue 13 (main on 2026-12-02): the "before" of CPU per check.
BEFORE_REF = "1bbe468"
TARGET_PASS_RATIO = 0.5
TARGET_PAGE_RATIO = 0.8
TARGET_CHECK_CPU_MS = 2.5
SECONDS_PER_DAY = 86400


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--users", type=int, default=1000)
    parser.add_argument("--hosts", type=int, default=997, help="image host names in the pass")
    parser.add_argument("--concurrency", type=int, default=16, help="RECHECK_CONCURRENCY")
    parser.add_argument(
        "--loop",
        choices=("uvloop", "asyncio"),
        default="uvloop",
        help="the event loop of the pass and its floor (the worker runs on uvloop)",
    )
    parser.add_argument("--before-ref", default=BEFORE_REF)
    parser.add_argument("--cpu-checks", type=int, default=2000)
    parser.add_argument("--cpu-rounds", type=int, default=3)
    parser.add_argument("--page-seconds", type=float, default=10.0)
    parser.add_argument("--page-connections", type=int, default=32)
    parser.add_argument("--page-rounds", type=int, default=2)
    parser.add_argument("--skip-cpu", action="store_true")
    parser.add_argument("--skip-pass", action="store_true")
    parser.add_argument("--skip-pages", action="store_true")
    parser.add_argument("--output", type=Path, default=BENCH_DIR / "results")
    return parser.parse_args()


# --- Step 1: CPU per check ---------------------------------------------------------------


def checker_tree(ref: str, directory: Path) -> Path | None:
    """`app/` as it was at `ref`, unpacked under `directory`; None if git cannot say."""
    archive = subprocess.run(  # noqa: S603
        ["git", "archive", "--format=tar", ref, "app"],  # noqa: S607
        cwd=ROOT,
        capture_output=True,
        check=False,
    )
    if archive.returncode != 0:
        log(f"cannot read {ref} from git ({archive.stderr.decode().strip()}): no 'before'")
        return None
    target = directory / f"tree-{ref}"
    target.mkdir()
    with tarfile.open(fileobj=_bytes_file(archive.stdout)) as tar:
        tar.extractall(target, filter="data")
    return target


def _bytes_file(data: bytes) -> Any:
    import io

    return io.BytesIO(data)


def check_cpu(tree: Path, port: int, checks: int, concurrency: int) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603
        [
            sys.executable,
            str(BENCH_DIR / "check_cpu.py"),
            "--tree",
            str(tree),
            "--port",
            str(port),
            "--checks",
            str(checks),
            "--concurrency",
            str(concurrency),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        check=True,
        cwd=tempfile.gettempdir(),
        env={**os.environ, "PYTHONPATH": ""},
    )
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def measure_check_cpu(args: argparse.Namespace, port: int, workdir: Path) -> dict[str, Any]:
    trees = {"after": ROOT}
    before = checker_tree(args.before_ref, workdir)
    if before is not None:
        trees = {"before": before, "after": ROOT}
    samples: dict[str, list[float]] = {name: [] for name in trees}
    for round_number in range(args.cpu_rounds):
        for name, tree in trees.items():
            result = check_cpu(tree, port, args.cpu_checks, args.concurrency)
            samples[name].append(result["cpu_ms_per_check"])
            log(f"check CPU round {round_number + 1} {name}: {result['cpu_ms_per_check']} ms")
    figures: dict[str, Any] = {
        f"{name}_ms": round(statistics.median(values), 3) for name, values in samples.items()
    }
    figures["samples_ms"] = samples
    figures["before_ref"] = args.before_ref if before is not None else None
    figures["checks_per_round"] = args.cpu_checks
    figures["concurrency"] = args.concurrency
    return figures


# --- Database ----------------------------------------------------------------------------


async def create_database(url: str) -> None:
    """A fresh database for this run; only one this bench marked is ever dropped."""
    parts = urlsplit(asyncpg_dsn(url))
    name = parts.path.lstrip("/")
    connection = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        comment = await connection.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
        exists = await connection.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
        if exists and (comment or "") != DB_MARKER:
            raise SystemExit(f"database {name!r} exists and was not made by this bench: refusing")
        if exists:
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        await connection.execute(f'CREATE DATABASE "{name}"')
        await connection.execute(f"COMMENT ON DATABASE \"{name}\" IS '{DB_MARKER}'")
    finally:
        await connection.close()


async def drop_database(url: str) -> None:
    parts = urlsplit(asyncpg_dsn(url))
    name = parts.path.lstrip("/")
    connection = await asyncpg.connect(parts._replace(path="/postgres").geturl())
    try:
        comment = await connection.fetchval(
            "SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1",
            name,
        )
        if comment == DB_MARKER:
            await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await connection.close()


async def seed(url: str, users: int, images: int, hosts: int, port: int) -> None:
    """`users` galleries sharing `images` images, all due, spread over `hosts` host names."""
    started = time.monotonic()
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        async with connection.transaction():
            await connection.execute(
                """
                INSERT INTO users (username, username_key, email, email_key, password_hash,
                                   is_active, is_admin, date_joined)
                SELECT 'user' || g, 'user' || g, 'user' || g || '@example.com',
                       'user' || g || '@example.com', 'not-a-hash', true, false, now()
                FROM generate_series(1, $1) AS g
                """,
                users,
            )
            await connection.execute(
                """
                INSERT INTO images (user_id, image_url, title, content_type, size_bytes, width,
                                    height, checked_at, created_at, updated_at, due_at)
                SELECT u.id, 'http://img-' || (n % $3) || '.bench.test:' || $4 || '/r/' || n
                                || '.png',
                       'Picture ' || n, 'image/png', 67, 1, 1, now() - interval '1 day',
                       now() - interval '1 day', now() - interval '1 day',
                       now() - interval '1 hour' + n * interval '1 millisecond'
                FROM generate_series(1, $2) AS n
                JOIN users AS u ON u.id = 1 + n % $1
                """,
                users,
                images,
                hosts,
                str(port),
            )
        await connection.execute("ANALYZE")
    finally:
        await connection.close()
    log(f"seeded {users} users, {images} due images in {time.monotonic() - started:.1f} s")


async def make_all_due(url: str, port: int) -> None:
    """Every image due again, at a loopback IP literal (the served app resolves names with
    the system's DNS, and no lookup may leave the machine)."""
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        await connection.execute(
            """
            UPDATE images SET image_url = 'http://127.0.0.1:' || $1 || '/r/' || id || '.png',
                              due_at = now() - interval '1 minute', recheck_claim = NULL
            """,
            str(port),
        )
        await connection.execute("VACUUM ANALYZE images")
    finally:
        await connection.close()


async def rechecked_since(url: str, since: datetime) -> int:
    connection = await asyncpg.connect(asyncpg_dsn(url))
    try:
        return int(
            await connection.fetchval("SELECT count(*) FROM images WHERE checked_at >= $1", since)
        )
    finally:
        await connection.close()


# --- Step 2: the pass against its floor -----------------------------------------------------


def run_json(command: list[str], env: dict[str, str], timeout: float) -> dict[str, Any]:
    completed = subprocess.run(  # noqa: S603
        command, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    if completed.returncode != 0:
        raise RuntimeError(f"{command[2]} failed: {completed.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(completed.stdout.strip().splitlines()[-1])
    return result


def measure_pass(
    args: argparse.Namespace, url: str, port: int, env: dict[str, str]
) -> dict[str, Any]:
    floor = run_json(
        [
            sys.executable,
            "-m",
            "bench.recheck_floor",
            "--port",
            str(port),
            "--checks",
            str(args.images),
            "--concurrency",
            str(args.concurrency),
        ],
        env,
        timeout=1800,
    )
    log(f"floor: {floor['checks_per_second']} checks/s, {floor['cpu_ms_per_check']} ms CPU each")
    app = run_json(
        [sys.executable, "-m", "bench.recheck_pass"],
        {
            **env,
            "DATABASE_URL": url,
            "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
            "RECHECK_CONCURRENCY": str(args.concurrency),
        },
        timeout=3600,
    )
    log(
        f"pass: {app['checked']} of {app['claimed']} checked in {app['seconds']} s, "
        f"{app['rechecks_per_second']}/s, {app['cpu_ms_per_recheck']} ms CPU each"
    )
    ratio = app["rechecks_per_second"] / floor["checks_per_second"]
    per_day_share = (1_000_000 / SECONDS_PER_DAY) / app["rechecks_per_second"]
    return {
        "images": args.images,
        "hosts": args.hosts,
        "floor": floor,
        "app": app,
        "ratio": round(ratio, 3),
        "million_images_pass_hours": round(1_000_000 / app["rechecks_per_second"] / 3600, 2),
        "million_a_day_worker_share": round(per_day_share, 4),
    }


# --- Step 3: gallery pages with and without the in-process worker ---------------------------


@contextlib.contextmanager
def serving(env: dict[str, str], port: int, name: str, log_path: Path) -> Iterator[int]:
    command = [str(Path(sys.executable).with_name("gallery")), "serve", "--no-migrate"]
    with running(command, {**env, "PORT": str(port)}, name, output=log_path) as process:
        wait_for_http(f"http://127.0.0.1:{port}/users?limit=1")
        yield process.pid


def measure_pages(
    args: argparse.Namespace, url: str, image_port: int, env: dict[str, str], workdir: Path
) -> dict[str, Any]:
    wrk_path = ensure_wrk()
    lines = [("GET", f"/users/{u}/images?limit=50", "-", "-") for u in range(1, args.users + 1)]
    requests = write_request_file(workdir, "gallery_page", lines)
    app_env = {
        **env,
        "ENVIRONMENT": "production",
        "SECRET_KEY": secrets.token_urlsafe(48),
        "DATABASE_URL": url,
        "HOST": "127.0.0.1",
        "WEB_CONCURRENCY": "1",
        "RATE_LIMIT_ENABLED": "false",
        "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
        "RECHECK_CONCURRENCY": str(args.concurrency),
        "RECHECK_PER_HOST_CONCURRENCY": str(args.concurrency),
    }
    modes = {
        "off": {"RECHECK_ENABLED": "false"},
        "on": {"RECHECK_ENABLED": "true", "RECHECK_IN_PROCESS": "true"},
    }
    samples: dict[str, list[dict[str, Any]]] = {mode: [] for mode in modes}
    for round_number in range(args.page_rounds):
        for mode, extra in modes.items():
            asyncio.run(make_all_due(url, image_port))
            port = free_port()
            log_path = Path(tempfile.gettempdir()) / f"gallery-recheck-bench-{mode}.log"
            with serving({**app_env, **extra}, port, f"app, rechecks {mode}", log_path) as pid:
                target = f"http://127.0.0.1:{port}"
                wrk(wrk_path, target, requests, args.page_connections, 2, 2)  # warm-up
                started = datetime.now(UTC)
                cpu = tree_cpu_seconds(pid)
                raw = wrk(wrk_path, target, requests, args.page_connections, args.page_seconds, 2)
                cpu = tree_cpu_seconds(pid) - cpu
                rechecked = asyncio.run(rechecked_since(url, started))
            seconds = raw["duration_us"] / 1e6
            sample = {
                "rps": round(raw["requests"] / seconds, 1),
                "p99_ms": raw["p99_us"] / 1000,
                "rechecks_per_second": round(rechecked / seconds, 1),
                "app_cpu_share": round(cpu / seconds, 2),
                "errors": {k: v for k, v in raw.items() if k.startswith("errors_") and v},
            }
            samples[mode].append(sample)
            log(f"gallery pages round {round_number + 1}, rechecks {mode}: {sample}")
    off = round(statistics.median(s["rps"] for s in samples["off"]), 1)
    on = round(statistics.median(s["rps"] for s in samples["on"]), 1)
    return {
        "connections": args.page_connections,
        "seconds": args.page_seconds,
        "off_rps": off,
        "on_rps": on,
        "on_rechecks_per_second": statistics.median(
            s["rechecks_per_second"] for s in samples["on"]
        ),
        "ratio": round(on / off, 3),
        "samples": samples,
    }


# --- The run -------------------------------------------------------------------------------


def main() -> None:
    stop_on_sigterm()
    args = parse_args()
    url = os.environ.get("BENCH_RECHECK_DATABASE_URL", DEFAULT_DATABASE_URL)
    ensure_loopback(url)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "BENCH_LOOP": args.loop}
    results: dict[str, Any] = {}
    image_port = free_port()
    host_command = [sys.executable, "-m", "bench.image_host", "--port", str(image_port)]
    with contextlib.ExitStack() as stack:
        stack.enter_context(running(host_command, env, "image host"))
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="recheck-bench-")))
        wait_for_http(f"http://127.0.0.1:{image_port}/ready.png")
        if not args.skip_cpu:
            results["check_cpu"] = measure_check_cpu(args, image_port, workdir)
        if not (args.skip_pass and args.skip_pages):
            asyncio.run(create_database(url))
            stack.callback(lambda: asyncio.run(drop_database(url)))
            migrate(url)
            asyncio.run(seed(url, args.users, args.images, args.hosts, image_port))
        if not args.skip_pass:
            results["recheck_pass"] = measure_pass(args, url, image_port, env)
        if not args.skip_pages:
            results["gallery_pages"] = measure_pages(args, url, image_port, env, workdir)
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    document = {
        "meta": {
            "started": stamp,
            "cores": os.cpu_count(),
            "load_average": os.getloadavg(),
            "python": sys.version.split()[0],
            "git": subprocess.run(
                ["git", "rev-parse", "--short", "HEAD"],  # noqa: S607
                cwd=ROOT,
                capture_output=True,
                text=True,
                check=False,
            ).stdout.strip(),
        },
        **results,
    }
    args.output.mkdir(parents=True, exist_ok=True)
    path = args.output / f"recheck-{stamp}.json"
    path.write_text(json.dumps(document, indent=2) + "\n")
    log(f"results: {path}")
    print(summary(document))


def summary(document: dict[str, Any]) -> str:
    """The figures against the issue's targets, as lines for docs/performance.md."""
    lines = []
    cpu = document.get("check_cpu")
    if cpu:
        before = f"{cpu['before_ms']} ms before, " if "before_ms" in cpu else ""
        lines.append(
            f"- CPU per check: {before}{cpu['after_ms']} ms now "
            f"(target < {TARGET_CHECK_CPU_MS} ms): "
            + ("met" if cpu["after_ms"] < TARGET_CHECK_CPU_MS else "**not met**")
        )
    rpass = document.get("recheck_pass")
    if rpass:
        lines.append(
            f"- Recheck pass over {rpass['images']:,} images: {rpass['app']['seconds']} s, "
            f"{rpass['app']['rechecks_per_second']}/s vs floor "
            f"{rpass['floor']['checks_per_second']}/s = {rpass['ratio']:.0%} "
            f"(target >= {TARGET_PASS_RATIO:.0%}): "
            + ("met" if rpass["ratio"] >= TARGET_PASS_RATIO else "**not met**")
        )
        lines.append(
            f"- A million images: a pass takes {rpass['million_images_pass_hours']} h for one "
            f"worker; a million a day keeps one worker busy "
            f"{rpass['million_a_day_worker_share']:.1%} of the time"
        )
    pages = document.get("gallery_pages")
    if pages:
        lines.append(
            f"- Gallery pages with the in-process worker rechecking "
            f"({pages['on_rechecks_per_second']}/s): {pages['on_rps']} vs {pages['off_rps']} "
            f"req/s = {pages['ratio']:.0%} (target >= {TARGET_PAGE_RATIO:.0%}): "
            + ("met" if pages["ratio"] >= TARGET_PAGE_RATIO else "**not met**")
        )
    return "\n".join(lines)


if __name__ == "__main__":
    if shutil.which("git") is None:
        log("git is missing: CPU per check is measured for this tree only")
    main()
