"""What one FastAPI dependency costs per request, in-process (docs/performance.md, "Fourth
round").

Three routes on a bare FastAPI app, each called as an ASGI app with the same scope and
answering the same empty JSON object: a session-like `yield` dependency alone (as the
framework floor reads); the dependencies a single image had before `app.reads` (that
session, media URLs, a validator that takes the response, and a viewer with the session
beneath it again); and one `yield` dependency in their place (as `app.reads.Read` is). The
dependencies do nothing, so the differences are FastAPI's solving alone. Timings are per
request in this process, medians of `--rounds`, the routes interleaved in each round.

    python -m bench.dependency_cost --requests 20000 --rounds 5
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request, Response
from starlette.types import Message, Scope


async def _session(request: Request) -> AsyncIterator[int]:
    yield 1


Session = Annotated[int, Depends(_session, scope="function")]


async def _media_urls(request: Request) -> int:
    return 1


async def _revalidation(request: Request, response: Response) -> int:
    return 2


async def _viewer(request: Request, session: Session) -> int:
    return 3


async def _read(request: Request, response: Response) -> AsyncIterator[tuple[int, int, int]]:
    yield (1, 2, 3)


MediaUrls = Annotated[int, Depends(_media_urls)]
Revalidation = Annotated[int, Depends(_revalidation)]
Viewer = Annotated[int, Depends(_viewer)]
Read = Annotated[tuple[int, int, int], Depends(_read, scope="function")]

ROUTES = {
    "session only (framework floor)": "/floor",
    "five solves (a single image before)": "/before",
    "one Read (a single image now)": "/after",
}


def create_app() -> FastAPI:
    app = FastAPI()

    @app.get("/floor")
    async def floor(session: Session) -> dict[str, int]:
        return {}

    @app.get("/before")
    async def before(
        session: Session, media_urls: MediaUrls, viewer: Viewer, revalidation: Revalidation
    ) -> dict[str, int]:
        return {}

    @app.get("/after")
    async def after(read: Read) -> dict[str, int]:
        return {}

    return app


async def _call(app: FastAPI, path: str) -> None:
    scope: Scope = {
        "type": "http",
        "method": "GET",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "headers": [],
        "root_path": "",
        "scheme": "http",
        "server": ("127.0.0.1", 8000),
        "client": ("127.0.0.1", 40000),
        "http_version": "1.1",
    }

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        return None

    await app(scope, receive, send)


async def _per_request_us(app: FastAPI, path: str, requests: int) -> float:
    started = time.perf_counter()
    for _ in range(requests):
        await _call(app, path)
    return (time.perf_counter() - started) / requests * 1e6


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    app = create_app()
    gc.collect()
    gc.freeze()
    for path in ROUTES.values():
        await _per_request_us(app, path, 2000)  # warm-up
    samples: dict[str, list[float]] = {name: [] for name in ROUTES}
    for _ in range(args.rounds):
        for name, path in ROUTES.items():
            samples[name].append(await _per_request_us(app, path, args.requests))
    medians = {name: statistics.median(values) for name, values in samples.items()}
    base = medians["session only (framework floor)"]
    for name, value in medians.items():
        print(f"{name:38} {value:7.1f} us/request  ({value - base:+6.1f} us)")
    return medians


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=5)
    asyncio.run(main_async(parser.parse_args()))


if __name__ == "__main__":
    main()
