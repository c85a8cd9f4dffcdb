"""The floor for the recheck pass: the same requests as a recheck, and nothing else.

For each of `--checks` images, at `--concurrency` at once: one connection to the loopback
image host, a HEAD, then a GET with `Range: bytes=0-65535` on the same connection (as the
checker does), each answer's head parsed just enough to find its body's length, at most
64 KiB read, then the connection closed. No database, no URL rules, no signature check, no
HTTP library: a bare asyncio program on the same event loop the worker runs (uvloop when
installed, as `app.cli.run_loop` chooses), so the app's rechecks per second divided by these
is the share the app's own work leaves.

`python -m bench.recheck_floor --port P --checks N --concurrency C` prints one JSON line.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time

WINDOW = 65536


def _content_length(head: bytes) -> int:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value)
    return 0


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes, body: bool
) -> int:
    writer.write(request)
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    if body:
        await reader.readexactly(min(_content_length(head), WINDOW))
    return status


async def _check(port: int, number: int) -> bool:
    path = f"/recheck/{number}.png"
    common = (
        f"Host: 127.0.0.1:{port}\r\nUser-Agent: floor\r\nAccept: image/*\r\n"
        "Accept-Encoding: identity\r\n"
    )
    head = f"HEAD {path} HTTP/1.1\r\n{common}\r\n".encode()
    get = f"GET {path} HTTP/1.1\r\n{common}Range: bytes=0-{WINDOW - 1}\r\n\r\n".encode()
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        ok = await _exchange(reader, writer, head, body=False) == 200
        return await _exchange(reader, writer, get, body=True) in (200, 206) and ok
    finally:
        writer.close()


async def _run(port: int, checks: int, concurrency: int) -> dict[str, float]:
    numbers = iter(range(checks))
    failures = 0

    async def lane() -> None:
        nonlocal failures
        for number in numbers:
            if not await _check(port, number):
                failures += 1

    cpu, wall = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(concurrency)))
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return {
        "checks": checks,
        "failures": failures,
        "concurrency": concurrency,
        "seconds": round(wall, 2),
        "checks_per_second": round(checks / wall, 1),
        "cpu_ms_per_check": round(cpu * 1000 / checks, 3),
        "loop": type(asyncio.get_running_loop()).__module__.split(".")[0],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--checks", type=int, required=True)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args()
    run = asyncio.run
    if os.environ.get("BENCH_LOOP") != "asyncio":  # `bench.recheck --loop asyncio` compares
        try:
            import uvloop  # as `gallery worker` and `gallery recheck --due` (app.cli.run_loop)
        except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
            pass
        else:
            run = uvloop.run
    print(json.dumps(run(_run(args.port, args.checks, args.concurrency))))


if __name__ == "__main__":
    main()
