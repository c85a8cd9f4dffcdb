"""Media bench: thumbnails served from storage against the single-image JSON read, the
thumbnails of a gallery page of 50 fresh photos, and CPU and memory per thumbnail for
Pillow and pyvips. Ratios and times in one run, on loopback only, bounded in time.

It starts `gallery serve` (one uvicorn worker, THUMBNAIL_WORKERS decoder processes, a
temporary SQLite database, or with --postgres a throwaway PostgreSQL one), an image host on
127.0.0.1 serving 4000x3000 JPEGs, and wrk. Stages:

1. gallery: 50 images are created at once (each 201 schedules its thumbnails), then a
   "browser" opens the page: it asks for the 50 thumbnails of 256 px, six at a time, as a
   browser does per host. Reported: seconds from the first create to the last thumbnail,
   and from opening the page to the last thumbnail.
2. serving: wrk alternates GET of one stored thumbnail and GET of the image's JSON, the
   same connections and duration for each, in the same process right after the gallery
   stage: a warm-up run of each, then rounds of A B B A, so drift on a shared machine or in
   the process touches both; the figure is the median of the rounds' ratios of
   thumbnail req/s over JSON req/s.
3. libraries: `bench.thumbnail_libraries` (Pillow as the app runs it, Pillow without draft
   mode, and pyvips when --vips-python has it).

Run: `python -m bench.media --vips-python /tmp/vipsbench/bin/python`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from bench import stop_on_sigterm, thumbnail_libraries

ROOT = Path(__file__).resolve().parent.parent
SECRET = "bench-secret-key-that-is-long-enough-for-hs256-0123456789"  # noqa: S105
PASSWORD = "a-long-enough-passphrase"  # noqa: S105
GALLERY_SIZE = 50
BROWSER_CONNECTIONS = 6  # what a browser opens per host over HTTP/1.1


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def start_photo_host(photo: bytes) -> tuple[ThreadingHTTPServer, str]:
    """Every path answers the same 4000x3000 JPEG (HEAD and GET, honouring no Range)."""

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _answer(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.send_header("Content-Length", str(len(photo)))
            self.end_headers()
            if self.command == "GET":
                # The URL check reads a window and hangs up.
                with contextlib.suppress(ConnectionError):
                    self.wfile.write(photo)

        do_GET = _answer  # noqa: N815
        do_HEAD = _answer  # noqa: N815

        def log_message(self, format: str, *args: object) -> None:
            pass

    ThreadingHTTPServer.request_queue_size = 128
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def start_app(
    directory: Path, database_url: str, workers: int
) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith(("DATABASE_", "WEB_"))},
        "ENVIRONMENT": "test",
        "SECRET_KEY": SECRET,
        "DATABASE_URL": database_url,
        "HOST": "127.0.0.1",
        "PORT": str(port),
        "WEB_CONCURRENCY": "1",
        "THUMBNAIL_WORKERS": str(workers),
        "THUMBNAIL_ON_CREATE": "true",
        "IMAGE_FETCH_ALLOWED_NETWORKS": "127.0.0.1/32",
        "IMAGE_FETCH_TIMEOUT": "30",
        "RATE_LIMIT_ENABLED": "false",
        "LOG_LEVEL": "WARNING",
        "METRICS_ENABLED": "false",
    }
    log = (directory / "app.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "app", "serve"],
        cwd=directory,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/health/ready", timeout=1).status_code == 200:
                return process, url
        except httpx.TransportError:
            pass
        if process.poll() is not None:
            break
        time.sleep(0.2)
    process.kill()
    raise RuntimeError((directory / "app.log").read_text(errors="replace"))


async def create_database(server_url: str) -> str:
    """A new empty database on the PostgreSQL server at `server_url` (loopback only)."""
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    url = make_url(server_url)
    if url.host not in ("127.0.0.1", "localhost", "::1"):
        raise SystemExit("the bench only talks to loopback")
    name = f"gallery_media_bench_{os.urandom(6).hex()}"
    engine = create_async_engine(url, isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
    finally:
        await engine.dispose()
    return url.set(database=name).render_as_string(hide_password=False)


async def drop_database(server_url: str, database_url: str) -> None:
    """Drop the database `create_database` made (and only that one)."""
    from sqlalchemy import make_url, text
    from sqlalchemy.ext.asyncio import create_async_engine

    name = make_url(database_url).database
    if name is None or not name.startswith("gallery_media_bench_"):
        raise ValueError(f"not a database this bench made: {name}")
    engine = create_async_engine(make_url(server_url), isolation_level="AUTOCOMMIT")
    try:
        async with engine.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await engine.dispose()


def tree_cpu_seconds(root_pid: int) -> float:
    """User + system CPU of a process, its live descendants and its reaped children."""
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
        if pid == root_pid:
            cpu[pid] += (int(fields[13]) + int(fields[14])) / ticks
    total = 0.0
    for pid, seconds in cpu.items():
        ancestor = pid
        while ancestor > 1 and ancestor != root_pid:
            ancestor = parents.get(ancestor, 0)
        if ancestor == root_pid:
            total += seconds
    return total


def own_cpu_seconds(pid: int) -> float:
    """User + system CPU of one process alone (its threads, not its children)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(app_pid: int, deadline_seconds: float = 60.0) -> None:
    """Wait until the app and its decoders are idle (under 5% of a core for a second):
    what the gallery stage left running (the large sizes, collections of its garbage)
    must not be measured as the cost of serving."""
    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        before = tree_cpu_seconds(app_pid)
        time.sleep(1.0)
        if tree_cpu_seconds(app_pid) - before < 0.05:
            return


async def gallery_stage(url: str, photo_url: str, app_pid: int) -> dict[str, Any]:
    limits = httpx.Limits(max_connections=GALLERY_SIZE)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:
        account = {"username": "bench", "email": "bench@example.com", "password": PASSWORD}
        await client.post("/accounts/register", json={**account, "password_confirm": PASSWORD})
        login = await client.post("/accounts/login", json={"login": "bench", "password": PASSWORD})
        headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

        started = time.perf_counter()
        cpu_started = tree_cpu_seconds(app_pid)
        api_cpu_started = own_cpu_seconds(app_pid)

        async def create(n: int) -> tuple[int, float]:
            sent = time.perf_counter()
            response = await client.post(
                "/users/1/images", json={"image_url": f"{photo_url}/photo-{n}.jpg"}, headers=headers
            )
            response.raise_for_status()
            return int(response.json()["id"]), time.perf_counter() - sent

        created = await asyncio.gather(*(create(n) for n in range(GALLERY_SIZE)))
        ids = [image_id for image_id, _ in created]
        page_opened = time.perf_counter()
        page = await client.get("/users/1/images", params={"limit": GALLERY_SIZE})
        page.raise_for_status()
        browser = asyncio.Semaphore(BROWSER_CONNECTIONS)
        statuses: list[int] = []

        async def thumbnail(image_id: int) -> None:
            async with browser:
                response = await client.get(f"/users/1/images/{image_id}/thumbnail?size=256")
                statuses.append(response.status_code)

        await asyncio.gather(*(thumbnail(image_id) for image_id in ids))
        finished = time.perf_counter()
        cpu_used = tree_cpu_seconds(app_pid) - cpu_started
        api_cpu_used = own_cpu_seconds(app_pid) - api_cpu_started

        # The large sizes follow in the background: wait for them (asking makes any that
        # is missing) so the serving stage does not compete with them.
        async def large(image_id: int) -> None:
            async with browser:
                response = await client.get(
                    f"/users/1/images/{image_id}/thumbnail?size=1024", timeout=600
                )
                response.raise_for_status()

        await asyncio.gather(*(large(image_id) for image_id in ids))
    return {
        "app_cpu_seconds_until_all_thumbnails": round(cpu_used, 2),
        "api_process_cpu_seconds": round(api_cpu_used, 2),
        "decoders_cpu_seconds": round(cpu_used - api_cpu_used, 2),
        "cpu_bound_estimate_on_idle_cores_s": round(cpu_used / len(os.sched_getaffinity(0)), 2),
        "images": GALLERY_SIZE,
        "create_201_seconds_max": round(max(seconds for _, seconds in created), 3),
        "first_create_to_all_thumbnails_s": round(finished - started, 3),
        "page_open_to_all_thumbnails_s": round(finished - page_opened, 3),
        "statuses": sorted(set(statuses)),
        "ids": ids,
        "headers": headers,
    }


def wrk(url: str, connections: int, seconds: int) -> tuple[float, int]:
    """Requests per second and requests done."""
    executable = shutil.which("wrk")
    if executable is None:
        raise RuntimeError("wrk is not installed")
    output = subprocess.run(  # noqa: S603 - a fixed command line on loopback
        [executable, "-t2", f"-c{connections}", f"-d{seconds}s", url],
        capture_output=True,
        text=True,
        check=True,
        timeout=seconds + 30,
    ).stdout
    rate = re.search(r"Requests/sec:\s+([\d.]+)", output)
    done = re.search(r"(\d+) requests in", output)
    if rate is None or done is None or "Non-2xx" in output:
        raise RuntimeError(f"wrk failed:\n{output}")
    return float(rate.group(1)), int(done.group(1))


def serving_stage(
    url: str, image_id: int, connections: int, seconds: int, rounds: int, app_pid: int
) -> dict[str, Any]:
    """req/s of each endpoint, and the app's CPU per request (steadier than req/s on a
    shared machine: other load slows a run down, it does not make a request cost more).

    Both routes are measured in the same state of the same process, interleaved: after a
    warm-up run of each, `rounds` rounds of thumbnail, JSON, JSON, thumbnail (ABBA), so a
    drift in the machine's load or the process's state within a round touches both routes
    alike, and neither always goes first. Each round gives a ratio; the figure is their
    median."""
    paths = {
        "thumbnail": f"{url}/users/1/images/{image_id}/thumbnail?size=256",
        "image": f"{url}/users/1/images/{image_id}",
    }
    httpx.get(paths["thumbnail"], timeout=30).raise_for_status()  # stored before measuring
    settle(app_pid)
    for target in paths.values():
        wrk(target, connections, 2)  # warm-up: neither route pays for first use
    rps: dict[str, list[float]] = {name: [] for name in paths}
    cpu_us: dict[str, list[float]] = {name: [] for name in paths}
    round_ratios: list[float] = []
    round_cpu_ratios: list[float] = []
    for _ in range(rounds):
        done_in_round = dict.fromkeys(paths, 0.0)
        seconds_in_round = dict.fromkeys(paths, 0.0)
        cpu_in_round = dict.fromkeys(paths, 0.0)
        for name in ("thumbnail", "image", "image", "thumbnail"):
            cpu_before = tree_cpu_seconds(app_pid)
            rate, done = wrk(paths[name], connections, seconds)
            cpu = tree_cpu_seconds(app_pid) - cpu_before
            rps[name].append(rate)
            cpu_us[name].append(round(cpu * 1e6 / done))
            done_in_round[name] += done
            seconds_in_round[name] += done / rate
            cpu_in_round[name] += cpu
        round_ratios.append(
            (done_in_round["thumbnail"] / seconds_in_round["thumbnail"])
            / (done_in_round["image"] / seconds_in_round["image"])
        )
        round_cpu_ratios.append(
            (cpu_in_round["image"] / done_in_round["image"])
            / (cpu_in_round["thumbnail"] / done_in_round["thumbnail"])
        )
    return {
        "connections": connections,
        "seconds_per_run": seconds,
        "rounds": rounds,
        "thumbnail_rps": rps["thumbnail"],
        "image_rps": rps["image"],
        "thumbnail_cpu_us_per_request": cpu_us["thumbnail"],
        "image_cpu_us_per_request": cpu_us["image"],
        "round_ratios": [round(ratio, 3) for ratio in round_ratios],
        "round_cpu_ratios": [round(ratio, 3) for ratio in round_cpu_ratios],
        "ratio_thumbnail_over_image": round(statistics.median(round_ratios), 3),
        "ratio_by_cpu_per_request": round(statistics.median(round_cpu_ratios), 3),
    }


def markdown(report: dict[str, Any]) -> str:
    gallery, serving = report["gallery"], report["serving"]
    lines = [
        f"# Media bench {report['started']} ({report['database']})",
        "",
        f"Machine: {report['cpus']} usable cores, load average before "
        f"{report['load_average_before'][0]:.1f}, after {report['load_average_after'][0]:.1f} "
        "(shared with other work: figures are ratios within this run).",
        "",
        "## Serving a stored thumbnail vs the single-image JSON read",
        "",
        f"wrk, {serving['connections']} connections, {serving['seconds_per_run']} s per run, "
        f"after a warm-up run of each, {serving['rounds']} rounds of thumbnail, JSON, JSON, "
        "thumbnail (ABBA) in the same process on one uvicorn worker; the figure is the median "
        "of the rounds' ratios:",
        "",
        f"- thumbnail (256 px WebP from the database): {serving['thumbnail_rps']} req/s",
        f"- image JSON: {serving['image_rps']} req/s",
        f"- ratio of req/s per round: {serving['round_ratios']}",
        f"- **ratio of req/s: {serving['ratio_thumbnail_over_image']:.2f}** (target at least 0.90)",
        f"- app CPU per request: thumbnail {serving['thumbnail_cpu_us_per_request']} us, "
        f"image JSON {serving['image_cpu_us_per_request']} us: **ratio "
        f"{serving['ratio_by_cpu_per_request']:.2f}** (JSON's CPU over the thumbnail's)",
        "",
        f"## A gallery page of {gallery['images']} fresh 4000x3000 JPEGs",
        "",
        f"Load average as the stage started: {report['load_average_at_gallery'][0]:.1f}.",
        "",
        f"- slowest 201 of the 50 concurrent creates: {gallery['create_201_seconds_max']} s",
        f"- first create to every 256-px thumbnail loaded: "
        f"**{gallery['first_create_to_all_thumbnails_s']} s** (target at most 5 s on 2 cores)",
        f"- page opened to every thumbnail loaded: {gallery['page_open_to_all_thumbnails_s']} s",
        f"- CPU the app and its decoders used meanwhile: "
        f"{gallery['app_cpu_seconds_until_all_thumbnails']} s, i.e. at least "
        f"{gallery['cpu_bound_estimate_on_idle_cores_s']} s on {report['cpus']} idle cores "
        f"(API process {gallery['api_process_cpu_seconds']} s: creates, URL checks, fetching "
        f"the originals; decoders {gallery['decoders_cpu_seconds']} s)",
        f"- thumbnail statuses: {gallery['statuses']}",
        "",
        "## CPU and peak memory per 256-px thumbnail of a 4000x3000 JPEG",
        "",
        "| library | CPU ms | wall ms | peak RSS MiB | increase MiB |",
        "|---|---|---|---|---|",
    ]
    for run in report["libraries"]["runs"]:
        lines.append(
            f"| {run['library']} | {run['cpu_ms_per_thumbnail']} | {run['wall_ms_per_thumbnail']} "
            f"| {run['peak_rss_mib']} | {run['peak_rss_increase_mib']} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    stop_on_sigterm()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--postgres",
        metavar="SERVER_URL",
        help="run on a throwaway database made on this PostgreSQL server (loopback only), "
        "e.g. postgresql+asyncpg://postgres@127.0.0.1:5432/test (default: temporary SQLite)",
    )
    parser.add_argument("--workers", type=int, default=2, help="THUMBNAIL_WORKERS")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--seconds", type=int, default=3, help="seconds per wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="ABBA rounds of the serving stage")
    parser.add_argument("--vips-python", help="an interpreter with pyvips, for the library stage")
    parser.add_argument("--skip-libraries", action="store_true", help="no library stage")
    parser.add_argument("--output", type=Path, default=ROOT / "bench" / "results")
    arguments = parser.parse_args()
    started = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    report: dict[str, Any] = {
        "started": started,
        "cpus": len(os.sched_getaffinity(0)),
        "load_average_before": os.getloadavg(),
    }
    with tempfile.TemporaryDirectory() as name:
        directory = Path(name)
        photo_path = directory / "photo.jpg"
        thumbnail_libraries.make_photo(photo_path)
        photo_host, photo_url = start_photo_host(photo_path.read_bytes())
        database_url = f"sqlite+aiosqlite:///{directory / 'bench.db'}"
        if arguments.postgres:
            database_url = asyncio.run(create_database(arguments.postgres))
        report["database"] = "postgresql" if arguments.postgres else "sqlite"
        process, url = start_app(directory, database_url, arguments.workers)
        try:
            report["load_average_at_gallery"] = os.getloadavg()
            gallery = asyncio.run(gallery_stage(url, photo_url, process.pid))
            image_id = gallery.pop("ids")[0]
            gallery.pop("headers")
            report["gallery"] = gallery
            report["serving"] = serving_stage(
                url,
                image_id,
                arguments.connections,
                arguments.seconds,
                arguments.rounds,
                process.pid,
            )
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
            photo_host.shutdown()
            if arguments.postgres:
                asyncio.run(drop_database(arguments.postgres, database_url))
        libraries = [("pillow", sys.executable), ("pillow-no-draft", sys.executable)]
        if arguments.skip_libraries:
            libraries = []
        if arguments.vips_python:
            libraries.append(("pyvips", arguments.vips_python))
        report["libraries"] = {
            "runs": [
                thumbnail_libraries.measure(python, library, photo_path, 10, 256)
                for library, python in libraries
            ]
        }
    report["load_average_after"] = os.getloadavg()
    arguments.output.mkdir(parents=True, exist_ok=True)
    (arguments.output / f"media-{started}.json").write_text(json.dumps(report, indent=2) + "\n")
    text = markdown(report)
    (arguments.output / f"media-{started}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
