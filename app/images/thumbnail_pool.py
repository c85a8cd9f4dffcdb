"""Decoder processes for thumbnails, so that a hostile file costs a process, never the API.

Each worker is `python -m app.images.thumbnail_worker`, with its address space capped
(RLIMIT_AS) and one job at a time; a job that outlives `THUMBNAIL_TIMEOUT` gets its worker
killed. A worker that crashes, is killed or answers nonsense is thrown away and the next
job starts a fresh one. Workers start on first use (an app that never makes a thumbnail
never starts one), and the pool is made by the lifespan and closed at shutdown.

Requests that wait for a thumbnail go before background work (`priority`), so a page being
looked at is not queued behind the thumbnails of images nobody has asked for yet.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import heapq
import itertools
import json
import logging
import os
import struct
import sys
from dataclasses import dataclass
from typing import Literal

logger = logging.getLogger(__name__)

_LENGTH = struct.Struct(">I")
MAX_ANSWER_HEADER_BYTES = 4096
# A WebP thumbnail of at most 4096 pixels a side stays far below this.
MAX_THUMBNAIL_BYTES = 32 * 1024 * 1024
# A worker is replaced after this many jobs, so whatever a decoder leaks or fragments
# does not accumulate.
JOBS_PER_WORKER = 500
MAX_LOGGED_STDERR_BYTES = 2048
PIPE_BYTES = 1 << 20
# Seconds a new worker may take to load Pillow and lock itself down (not the job's limit:
# a loaded machine starts Python slowly, and no stranger's bytes are involved yet).
START_TIMEOUT = 30.0

Outcome = Literal["ok", "too_large", "undecodable"]


@dataclass(frozen=True)
class Rendered:
    """What a worker answered: a thumbnail, or why there is none."""

    outcome: Outcome
    data: bytes = b""
    width: int = 0
    height: int = 0
    detail: str = ""


class WorkerFailed(Exception):
    """The worker died, hung past the time limit or broke the protocol; it was replaced."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# What a worker needs of the API's environment to start Python and import its module.
_WORKER_ENVIRONMENT = ("PATH", "PYTHONPATH", "PYTHONHOME", "LANG", "LC_ALL", "TZ", "VIRTUAL_ENV")


def worker_environment() -> dict[str, str]:
    """The environment a decoder process starts with: only what Python needs."""
    environment = {name: os.environ[name] for name in _WORKER_ENVIRONMENT if name in os.environ}
    environment["PYTHONDONTWRITEBYTECODE"] = "1"
    return environment


def _frame(payload: bytes) -> bytes:
    return _LENGTH.pack(len(payload)) + payload


def _is_webp(data: bytes) -> bool:
    """A RIFF container of WebP whose declared length is the data's (RFC 9649 section 2.5)."""
    return (
        len(data) >= 12
        and data[:4] == b"RIFF"
        and data[8:12] == b"WEBP"
        and int.from_bytes(data[4:8], "little") + 8 == len(data)
    )


class _Worker:
    def __init__(self, process: asyncio.subprocess.Process) -> None:
        self.process = process
        self.jobs = 0
        self.sandbox: dict[str, object] = {}
        assert process.stderr is not None
        self._relay = asyncio.create_task(_relay_stderr(process.pid, process.stderr))

    @property
    def pid(self) -> int:
        return self.process.pid

    @classmethod
    async def start(cls, memory_limit: int, max_input: int) -> _Worker:
        """A new worker, once it said it is ready (loaded and locked down)."""
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "app.images.thumbnail_worker",
            str(memory_limit),
            str(max_input),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            # A pipe into the API's log: a decoder's crash message belongs in the logs, and
            # a decoder may not write to files (the API's stderr may be one).
            stderr=asyncio.subprocess.PIPE,
            # Not the API's environment: a decoder subverted by a file must not find the
            # secret key, the database's password or the SMTP password there.
            env=worker_environment(),
        )
        _widen_pipe(process)
        worker = cls(process)
        try:
            async with asyncio.timeout(START_TIMEOUT):
                worker.sandbox = await worker._ready()
        except BaseException as exc:
            await asyncio.shield(worker.stop())
            if isinstance(exc, TimeoutError):
                raise WorkerFailed("did not start in time") from exc
            raise
        return worker

    async def _ready(self) -> dict[str, object]:
        stdout = self.process.stdout
        assert stdout is not None
        try:
            hello = json.loads(await self._read_frame(stdout, MAX_ANSWER_HEADER_BYTES))
            await self._read_frame(stdout, 0)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise WorkerFailed("did not start") from exc
        except (ValueError, TypeError) as exc:
            raise WorkerFailed("broke the protocol") from exc
        if not isinstance(hello, dict) or hello.get("status") != "ready":
            raise WorkerFailed("broke the protocol")
        return hello

    async def run(self, header: dict[str, object], data: bytes) -> Rendered:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None
        assert stdout is not None
        self.jobs += 1
        try:
            # The original is handed to the pipe as it is, not copied into a frame first.
            stdin.write(_frame(json.dumps(header).encode()) + _LENGTH.pack(len(data)))
            stdin.write(data)
            await stdin.drain()
            answer = json.loads(await self._read_frame(stdout, MAX_ANSWER_HEADER_BYTES))
            thumbnail = await self._read_frame(stdout, MAX_THUMBNAIL_BYTES)
        except (ConnectionError, asyncio.IncompleteReadError) as exc:
            raise WorkerFailed("crashed") from exc
        except (ValueError, TypeError, RecursionError) as exc:
            # RecursionError: a header of deeply nested JSON, which only a hostile worker sends.
            raise WorkerFailed("broke the protocol") from exc
        outcome = answer.get("status") if isinstance(answer, dict) else None
        if outcome not in ("ok", "too_large", "undecodable"):
            raise WorkerFailed("broke the protocol")
        if outcome != "ok":
            return Rendered(outcome, detail=str(answer.get("detail", "")))
        width, height = answer.get("width"), answer.get("height")
        if not (
            isinstance(width, int)
            and isinstance(height, int)
            and 0 < max(width, height) <= int(str(header["size"]))
            and min(width, height) > 0
            and _is_webp(thumbnail)
        ):
            # What is stored is served as image/webp: only a WebP of the size asked for.
            raise WorkerFailed("broke the protocol")
        return Rendered("ok", thumbnail, width, height)

    @staticmethod
    async def _read_frame(stream: asyncio.StreamReader, limit: int) -> bytes:
        (length,) = _LENGTH.unpack(await stream.readexactly(_LENGTH.size))
        if length > limit:
            raise ValueError("answer frame too long")
        return await stream.readexactly(length)

    async def stop(self) -> None:
        """End the worker now (it holds no state worth a goodbye) and reap it."""
        with contextlib.suppress(ProcessLookupError):
            self.process.kill()
        await self.process.wait()
        await self._relay


def _widen_pipe(process: asyncio.subprocess.Process) -> None:
    """A 1 MiB pipe to the worker (Linux's default is 64 KiB): an original of several
    megabytes then crosses in a few writes, not a hundred wake-ups of both processes."""
    transport = process.stdin.transport if process.stdin is not None else None
    pipe = transport.get_extra_info("pipe") if transport is not None else None
    if pipe is not None and hasattr(fcntl, "F_SETPIPE_SZ"):
        with contextlib.suppress(OSError):  # above /proc/sys/fs/pipe-max-size: keep 64 KiB
            fcntl.fcntl(pipe.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)


async def _relay_stderr(pid: int, stream: asyncio.StreamReader) -> None:
    """What a decoder writes to stderr, into the API's log, a bounded piece at a time."""
    with contextlib.suppress(ConnectionError):
        while chunk := await stream.read(MAX_LOGGED_STDERR_BYTES):
            logger.warning("thumbnail worker %d: %s", pid, chunk.decode(errors="replace").rstrip())


class ThumbnailPool:
    """At most `size` decoder processes, each doing one job at a time."""

    def __init__(self, size: int, *, timeout: float, memory_limit: int, max_input: int) -> None:
        self._size = size
        self._timeout = timeout
        self._memory_limit = memory_limit
        self._max_input = max_input
        self._idle: list[_Worker] = []
        self._busy: set[_Worker] = set()
        self._free_slots = size
        self._waiters: list[tuple[int, int, asyncio.Future[None]]] = []
        self._order = itertools.count()
        self._closed = False
        self.workers_started = 0  # for tests and metrics: how many processes were started
        self._told_sandbox = False

    @property
    def pids(self) -> list[int]:
        """The process ids of every worker, idle or busy."""
        return [worker.pid for worker in (*self._idle, *self._busy)]

    @property
    def busy_pids(self) -> list[int]:
        """The process ids of the workers running a job right now."""
        return [worker.pid for worker in self._busy]

    async def render(
        self, data: bytes, pillow_format: str, size: int, max_pixels: int, *, priority: int = 0
    ) -> Rendered:
        """Make one thumbnail in a worker; lower `priority` goes first. `WorkerFailed` when
        the worker crashed, hung past the time limit or broke the protocol."""
        await self._acquire(priority)
        worker: _Worker | None = None
        try:
            worker = self._idle.pop() if self._idle else await self._start_worker()
            self._busy.add(worker)
            header = {"format": pillow_format, "size": size, "max_pixels": max_pixels}
            try:
                async with asyncio.timeout(self._timeout):
                    rendered = await worker.run(header, data)
            except TimeoutError as exc:
                raise WorkerFailed("timed out") from exc
        except BaseException as exc:
            if worker is not None:
                # Whatever state it is in (mid-job, dead, confused), it is not reused.
                self._busy.discard(worker)
                await asyncio.shield(worker.stop())
                reason = exc.reason if isinstance(exc, WorkerFailed) else type(exc).__name__
                logger.warning("thumbnail worker %d replaced: %s", worker.pid, reason)
            self._release()
            raise
        self._busy.discard(worker)
        if self._closed or worker.jobs >= JOBS_PER_WORKER:
            await worker.stop()
        else:
            self._idle.append(worker)
        self._release()
        return rendered

    async def _start_worker(self) -> _Worker:
        worker = await _Worker.start(self._memory_limit, self._max_input)
        self.workers_started += 1
        if not self._told_sandbox and not worker.sandbox.get("own_network"):
            self._told_sandbox = True
            # Not an error: without CAP_SYS_ADMIN (a non-root container) a decoder keeps the
            # API's network namespace, and RLIMIT_NOFILE alone keeps it from any socket.
            logger.debug("thumbnail workers share the API's network namespace")
        return worker

    async def _acquire(self, priority: int) -> None:
        if self._closed:
            raise WorkerFailed("the pool is closed")
        if self._free_slots > 0 and not self._waiters:
            self._free_slots -= 1
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._order), waiter))
        try:
            await waiter
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._release()  # handed a slot as it was cancelled: pass it on
            else:
                self._waiters = [entry for entry in self._waiters if entry[2] is not waiter]
                heapq.heapify(self._waiters)
            raise
        if self._closed:
            self._release()
            raise WorkerFailed("the pool is closed")

    def _release(self) -> None:
        while self._waiters:
            _, _, waiter = heapq.heappop(self._waiters)
            if not waiter.done():
                waiter.set_result(None)  # the slot passes straight to the next waiter
                return
        self._free_slots += 1

    async def close(self) -> None:
        """Stop every worker; running jobs fail with `WorkerFailed`."""
        self._closed = True
        for _, _, waiter in self._waiters:
            if not waiter.done():
                waiter.set_result(None)
        workers = [*self._idle, *self._busy]
        self._idle.clear()
        await asyncio.gather(*(worker.stop() for worker in workers), return_exceptions=True)
