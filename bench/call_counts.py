"""Python function calls per read request: the app against the framework floor, in-process.

Timed runs on a shared machine swing by 10-15% between processes; the number of Python
calls a request makes does not. Each app is started with its lifespan and called as an
ASGI app (bench/inprocess_reads.py does the same for CPU time), warmed up, then profiled
with cProfile over `--requests` requests; the report gives calls per request for both and
the modules where the app makes more. The database is the bench's (BENCH_DATABASE_URL,
seeded by `python -m bench.run`), configured through the environment as for
bench/inprocess_reads.py.

    python -m bench.call_counts --scenarios image,gallery_deep --requests 1000
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import cProfile
import logging.config
import pstats
from typing import Any

from bench.inprocess_reads import _measure

Request = tuple[str, str, str | None]


def _module(path: str) -> str:
    for marker in ("site-packages/", "/app/", "/bench/"):
        if marker in path:
            return (
                path.split(marker)[-1]
                if marker == "site-packages/"
                else marker[1:] + path.split(marker)[-1]
            )
    return "builtins" if path == "~" else path


def _calls(profile: cProfile.Profile, requests: int) -> tuple[float, collections.Counter[str]]:
    stats = pstats.Stats(profile)
    by_module: collections.Counter[str] = collections.Counter()
    for (path, _, _), (_, calls, _, _, _) in stats.stats.items():  # type: ignore[attr-defined]
        by_module[_module(path)] += calls
    return stats.total_calls / requests, by_module  # type: ignore[attr-defined]


async def _scenarios(app: Any, dsn: str) -> dict[str, list[Request]]:
    import asyncpg
    import httpx

    connection = await asyncpg.connect(dsn)
    images = [
        (r["user_id"], r["id"])
        for r in await connection.fetch(
            "SELECT user_id, id FROM images WHERE visibility = 'public' ORDER BY id LIMIT 200"
        )
    ]
    await connection.close()
    users = sorted({user for user, _ in images})[:20]
    deep: list[Request] = []
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://127.0.0.1:8000") as client:
        for user in users:
            page = (await client.get(f"/users/{user}/images?limit=50")).json()
            if page["next_cursor"]:
                deep.append(
                    (f"/users/{user}/images", f"limit=50&cursor={page['next_cursor']}", None)
                )
    return {
        "image": [(f"/users/{u}/images/{i}", "", None) for u, i in images],
        "gallery_page": [(f"/users/{u}/images", "limit=50", None) for u in users],
        "gallery_deep": deep,
        "users_page": [("/users", "limit=50", None)],
    }


async def main_async(args: argparse.Namespace) -> None:
    from asgi_lifespan import LifespanManager

    from app.config import Settings
    from app.main import create_app
    from app.ops.logs import logging_config
    from bench.framework_floor import create_app as create_floor

    settings = Settings()
    logging.config.dictConfig(logging_config(settings))
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    app, floor = create_app(settings), create_floor()
    async with LifespanManager(app), LifespanManager(floor):
        scenarios = await _scenarios(app, dsn)
        for name in args.scenarios.split(","):
            counted = {}
            for target, target_app in (("app", app), ("framework", floor)):
                await _measure(target_app, scenarios[name], 200, 8)  # warm-up
                profile = cProfile.Profile()
                profile.enable()
                await _measure(target_app, scenarios[name], args.requests, 8)
                profile.disable()
                # `_measure` first checks 50 requests for a 200: they are counted too.
                counted[target] = _calls(profile, args.requests + 50)
            app_calls, app_modules = counted["app"]
            floor_calls, floor_modules = counted["framework"]
            print(f"{name}: {app_calls:.0f} calls per request, framework floor {floor_calls:.0f}")
            extra = collections.Counter(
                {m: app_modules[m] - floor_modules[m] for m in app_modules | floor_modules}
            )
            for module, calls in extra.most_common(args.top):
                print(f"  {calls / (args.requests + 50):+8.1f}  {module}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--scenarios", default="image,gallery_page,gallery_deep,users_page")
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--top", type=int, default=12)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
