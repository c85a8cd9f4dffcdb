"""Where the app's CPU goes against the framework floor's: py-spy on both under the same wrk load.

Starts the app (`gallery serve`, as `make bench` runs it) and the framework floor
(bench/framework_floor.py) over the bench database, and for each scenario runs wrk against
one of them at a time while `py-spy record --subprocesses` samples every worker. Each
sample is billed to a layer (our middleware, logging, metrics, FastAPI, SQLAlchemy...) by
the innermost frame that belongs to one; the layer's share of the samples times the CPU
per request measured from /proc in the same run gives microseconds per request.

    python -m bench.profile_reads --scenarios image,gallery_page --seconds 8

Needs py-spy (`pip install py-spy`) and a seeded bench database (run `make bench` once).
Loopback only, bounded: one wrk run of `--seconds` per scenario and target.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from bench import run as bench

# (path fragment, layer), first match from the innermost frame outwards wins.
LAYERS: tuple[tuple[str, str], ...] = (
    ("app/ops/middleware.py", "our middleware"),
    ("app/ops/proxies.py", "our middleware"),
    ("app/ops/logs.py", "access log"),
    ("logging/__init__.py", "access log"),
    ("prometheus_client", "metrics"),
    ("app/ops/metrics.py", "metrics"),
    ("app/ops/http_protocol.py", "uvicorn (HTTP)"),
    ("uvicorn/", "uvicorn (HTTP)"),
    ("jose/", "JWT"),
    ("app/accounts/", "authentication"),
    ("sqlalchemy/", "SQLAlchemy"),
    ("asyncpg/", "asyncpg"),
    ("pydantic", "pydantic (validation, JSON)"),
    ("fastapi/", "FastAPI"),
    ("starlette/", "Starlette"),
    ("anyio/", "anyio"),
    ("bench/framework_floor.py", "routes and services"),
    ("app/", "routes and services"),
    ("asyncio/", "event loop"),
)


def layer_of(stack: str) -> str:
    frames = stack.split(";")
    for frame in reversed(frames):
        for fragment, layer in LAYERS:
            if fragment in frame:
                return layer
    return "other"


def py_spy() -> str:
    found = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    if not Path(found).exists():
        raise SystemExit("py-spy is missing: pip install py-spy")
    return found


def profile(
    plan: bench.Plan, name: str, target: str, url: str, pid: int, request_file: Path, out: Path
) -> dict[str, object]:
    """One wrk run against `url` while py-spy samples `pid` and its workers."""
    args = plan.args
    bench.wrk(plan.wrk_path, url, request_file, args.connections, 1, plan.threads)  # warm-up
    bench.settle([pid])
    raw = out / f"{name}-{target}.txt"
    recorder = subprocess.Popen(  # noqa: S603
        [py_spy(), "record", "--subprocesses", "--nonblocking", "-r", "200", "-f", "raw",
         "-o", str(raw), "-d", str(int(args.seconds) + 1), "-p", str(pid)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(0.5)
    cpu_before = bench.tree_cpu_seconds(pid)
    result = bench.wrk(
        plan.wrk_path, url, request_file, args.connections, args.seconds, plan.threads
    )
    cpu = bench.tree_cpu_seconds(pid) - cpu_before
    recorder.wait(timeout=args.seconds + 60)
    samples: Counter[str] = Counter()
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue  # a frame name with a line break in it (a SQL text): not a sample line
        samples[layer_of(stack)] += int(count)
    total = sum(samples.values()) or 1
    us_per_request = cpu * 1e6 / max(1, result["requests"])
    return {
        "scenario": name,
        "target": target,
        "rps": round(result["requests"] / (result["duration_us"] / 1e6), 1),
        "cpu_us_per_request": round(us_per_request, 1),
        "layers_us": {
            layer: round(us_per_request * count / total, 1)
            for layer, count in samples.most_common()
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default="image,gallery_page,me")
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--pool-size", type=int, default=10)
    parser.add_argument("--output", type=Path, default=Path(tempfile.gettempdir()) / "profiles")
    args = parser.parse_args()
    args.output.mkdir(parents=True, exist_ok=True)
    database_url = os.environ.get("BENCH_DATABASE_URL", bench.DEFAULT_DATABASE_URL)
    bench.ensure_loopback(database_url)
    plan = bench.Plan(
        args=args,
        database_url=database_url,
        wrk_path=bench.ensure_wrk(),
        per_user=100,
        connections=[args.connections],
        latencies=[0],
        wanted=set(args.scenarios.split(",")),
        threads=os.cpu_count() or 1,
    )
    fixture = asyncio.run(bench.load_fixture(database_url, plan.per_user))
    secret = secrets.token_urlsafe(48)
    reports = []
    with contextlib.ExitStack() as stack:
        servers = bench.start_servers(stack, plan, secret)
        tokens = bench.sign_in(servers.app_url, fixture.user_ids[: bench.SIGNED_IN_USERS])
        scenarios = bench.build_requests(
            fixture, tokens, bench.CursorCodec(secret.encode()), servers.image_hosts
        )
        for name in args.scenarios.split(","):
            request_file = bench.write_request_file(args.output, name, scenarios[name])
            for target, url, pid in (
                ("app", servers.app_url, servers.app_pid),
                ("framework", servers.framework_url, servers.framework_pid),
            ):
                report = profile(plan, name, target, url, pid, request_file, args.output)
                print(json.dumps(report), flush=True)
                reports.append(report)
    (args.output / "profile.json").write_text(json.dumps(reports, indent=2) + "\n")


if __name__ == "__main__":
    main()
