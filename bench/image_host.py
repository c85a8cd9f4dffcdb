"""A loopback image host for the create scenarios, with a configurable answer latency.

Every path answers a small real PNG to HEAD and GET after `--latency-ms`, with HTTP/1.1
keep-alive; the latency is an asyncio sleep, so thousands of checks can wait at once and
the host never becomes the bottleneck it is meant to simulate. It binds 127.0.0.1 only.

Run: `python -m bench.image_host --port 8901 --latency-ms 100`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import signal

# A 1x1 PNG.
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)
HEADERS = (
    b"HTTP/1.1 200 OK\r\nContent-Type: image/png\r\nContent-Length: "
    + str(len(PNG)).encode()
    + b"\r\n\r\n"
)
MAX_HEADER_BYTES = 16 * 1024


async def _serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, delay: float) -> None:
    try:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                return
            if delay:
                await asyncio.sleep(delay)
            writer.write(HEADERS if head.startswith(b"HEAD ") else HEADERS + PNG)
            await writer.drain()
    finally:
        writer.close()
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()


async def main(port: int, latency_ms: float) -> None:
    delay = latency_ms / 1000
    server = await asyncio.start_server(
        lambda r, w: _serve(r, w, delay), "127.0.0.1", port, limit=MAX_HEADER_BYTES, backlog=1024
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    async with server:
        await stop.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    args = parser.parse_args()
    try:
        import uvloop

        uvloop.install()
    except ImportError:  # pragma: no cover - uvicorn[standard] brings uvloop
        pass
    asyncio.run(main(args.port, args.latency_ms))
