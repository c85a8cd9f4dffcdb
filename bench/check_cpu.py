"""CPU per image check, in-process: `ImageChecker.check` run many times against the loopback
image host, CPU time of this process divided by the checks (the host runs in another).

Run against any tree of the app, so a before/after pair is measured in one run:
`python bench/check_cpu.py --tree DIR --port P` prints one JSON line. Only the checker's
construction (`create_image_transport`, `ImageChecker(transport, settings, resolver)`) and
`check(url)` are used, which every version of the app since the check began has.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time


class _LoopbackResolver:
    """Every bench name is the image host on 127.0.0.1: no lookup leaves the process."""

    async def resolve(self, host: str, port: int) -> list[str]:
        return ["127.0.0.1"]


async def _measure(port: int, checks: int, concurrency: int, warmup: int) -> dict[str, float]:
    from app.config import Settings
    from app.images.checker import ImageChecker
    from app.images.fetcher import create_image_transport

    settings = Settings(
        _env_file=None,  # type: ignore[call-arg]
        image_fetch_allowed_networks=["127.0.0.1/32"],
        image_fetch_concurrency=max(concurrency, 1),
    )
    transport = create_image_transport(settings)
    checker = ImageChecker(transport, settings, _LoopbackResolver())
    slots = asyncio.Semaphore(concurrency)

    async def one(number: int) -> None:
        async with slots:
            await checker.check(f"http://images.bench.test:{port}/check/{number}.png")

    await asyncio.gather(*(one(n) for n in range(warmup)))
    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(one(n) for n in range(checks)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await transport.aclose()
    return {
        "checks": checks,
        "concurrency": concurrency,
        "cpu_ms_per_check": round(cpu * 1000 / checks, 3),
        "checks_per_second": round(checks / wall, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", required=True, help="the repository tree whose app/ to load")
    parser.add_argument("--port", type=int, required=True, help="the loopback image host")
    parser.add_argument("--checks", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    sys.path.insert(0, args.tree)
    result = asyncio.run(_measure(args.port, args.checks, args.concurrency, args.warmup))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
