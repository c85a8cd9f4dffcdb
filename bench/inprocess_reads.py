"""CPU per read request in-process: the app and the framework floor called as ASGI apps.

Steadier than wrk on a shared machine (no HTTP server, no load generator competing for the
cores): each app is started with its lifespan and called `--requests` times, `--concurrency`
at a time, with the same scope wrk's request would make; the figure is this process's CPU
time per request. The app runs as `gallery serve` configures it (its logging config with
the JSON access line written to a file, multiprocess metrics, ALLOWED_HOSTS and
TRUSTED_PROXIES set); the database is the bench's (BENCH_DATABASE_URL, seeded by
`python -m bench.run`).

    python -m bench.inprocess_reads --tree . --requests 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging.config
import os
import sys
import time
from typing import Any


async def _call(app: Any, path: str, query: str, token: str | None) -> tuple[int, bytes]:
    headers = [(b"host", b"127.0.0.1:8000"), (b"user-agent", b"inprocess")]
    if token:
        headers.append((b"authorization", f"Bearer {token}".encode()))
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.4"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": query.encode(),
        "headers": headers,
        "client": ("127.0.0.1", 40000),
        "server": ("127.0.0.1", 8000),
        "state": {},
    }
    status = 0
    body = b""

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status, body
        if message["type"] == "http.response.start":
            status = message["status"]
        elif message["type"] == "http.response.body":
            body += message.get("body", b"")

    await app(scope, receive, send)
    return status, body


async def _measure(
    app: Any, requests: list[tuple[str, str, str | None]], total: int, concurrency: int
) -> float:
    for path, query, token in requests[:50]:
        status, body = await _call(app, path, query, token)
        if status != 200:
            raise RuntimeError(f"{path}?{query}: {status} {body[:200]!r}")
    queue = list(range(total))

    async def worker() -> None:
        while queue:
            n = queue.pop()
            path, query, token = requests[n % len(requests)]
            await _call(app, path, query, token)

    started = time.process_time()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return (time.process_time() - started) * 1e6 / total


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    import asyncpg
    from asgi_lifespan import LifespanManager

    from app.config import Settings
    from app.main import create_app
    from app.ops.logs import logging_config
    from bench.framework_floor import create_app as create_floor

    settings = Settings()
    logging.config.dictConfig(logging_config(settings))
    dsn = settings.database_url.replace("postgresql+asyncpg://", "postgresql://")
    connection = await asyncpg.connect(dsn)
    images = [
        (r["user_id"], r["id"])
        for r in await connection.fetch(
            "SELECT user_id, id FROM images WHERE visibility = 'public' ORDER BY random() LIMIT 500"
        )
    ]
    users = [
        r["id"]
        for r in await connection.fetch(
            "SELECT id FROM users WHERE NOT is_admin ORDER BY id LIMIT 200"
        )
    ]
    await connection.close()
    app = create_app(settings)
    results: dict[str, Any] = {}
    async with LifespanManager(app):
        import httpx

        from bench.run import ADMIN_NAME, PASSWORD

        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport, base_url="http://127.0.0.1:8000"
        ) as client:
            tokens = []
            for name in ("user1", ADMIN_NAME):
                login = await client.post(
                    "/accounts/login", json={"login": name, "password": PASSWORD}
                )
                tokens.append(login.json()["access_token"])
        scenarios = {
            "image": [(f"/users/{u}/images/{i}", "", None) for u, i in images],
            "gallery_page": [(f"/users/{u}/images", "limit=50", None) for u in users],
            "users_page": [("/users", "limit=50", None)],
            "me": [("/users/me", "", tokens[0])],
            "admin_first": [("/images", "limit=50", tokens[1])],
        }
        floor = create_floor()
        async with LifespanManager(floor):
            for name in args.scenarios.split(","):
                requests = scenarios[name]
                targets = (("app", app), ("framework", floor))
                # Alternating rounds: a burst of other load on the machine hits both.
                for _ in range(args.rounds):
                    for target, target_app in (t for t in targets if t[0] in args.targets):
                        us = await _measure(target_app, requests, args.requests, args.concurrency)
                        results.setdefault(f"{name} {target}", []).append(round(us, 1))
    for key, values in list(results.items()):
        results[key] = {
            "min": min(values),
            "median": sorted(values)[len(values) // 2],
            "all": values,
        }
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--tree", default=".")
    parser.add_argument("--requests", type=int, default=3000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--targets", default="app,framework")
    parser.add_argument("--scenarios", default="image,gallery_page,users_page,me,admin_first")
    args = parser.parse_args()
    sys.path.insert(0, os.path.abspath(args.tree))
    print(json.dumps(asyncio.run(main_async(args)), indent=1))


if __name__ == "__main__":
    main()
