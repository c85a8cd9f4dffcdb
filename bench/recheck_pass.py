"""One recheck pass as `gallery recheck --due` runs it (`open_rechecker`, `run_pass`, on
`app.cli.run_loop`'s event loop: uvloop when installed), timed in-process: wall time and
this process's CPU over the pass, without start-up.

The images' host names (`*.bench.test`) all resolve to the loopback image host through a
resolver of our own, so no lookup leaves the machine while per-host politeness still sees
many hosts. Settings come from the environment (DATABASE_URL, RECHECK_*, IMAGE_FETCH_*).

`python -m bench.recheck_pass` prints one JSON line.
"""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any


class BenchResolver:
    """`*.bench.test` is the image host on 127.0.0.1; any other name does not resolve."""

    async def resolve(self, host: str, port: int) -> list[str]:
        from app.images.errors import ImageUrlUnreachable

        if host.endswith(".bench.test"):
            return ["127.0.0.1"]
        raise ImageUrlUnreachable("not a bench host")


async def _pass() -> dict[str, Any]:
    from app.config import Settings
    from app.images.recheck import open_rechecker

    settings = Settings()
    async with open_rechecker(settings, resolver=BenchResolver()) as rechecker:
        cpu, wall = time.process_time(), time.perf_counter()
        result = await rechecker.run_pass()
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "claimed": result.claimed,
        "checked": result.checked,
        "outcomes": dict(result.outcomes),
        "seconds": round(wall, 2),
        "rechecks_per_second": round(result.checked / wall, 1) if wall else 0.0,
        "cpu_ms_per_recheck": round(cpu * 1000 / max(result.checked, 1), 3),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
        "concurrency": settings.recheck_concurrency,
        "per_host_concurrency": settings.recheck_per_host_concurrency,
    }


if __name__ == "__main__":
    import asyncio
    import os

    from app.cli import run_loop  # the loop `gallery recheck --due` runs on (uvloop)

    # BENCH_LOOP=asyncio: asyncio's own loop instead, for comparison (`bench.recheck --loop`).
    run = asyncio.run if os.environ.get("BENCH_LOOP") == "asyncio" else run_loop
    print(json.dumps(run(_pass())))
