"""The decoder process's sandbox: once loaded, a decoder can open no socket or file, write
no file, start no process and gain no privilege, and it still makes thumbnails (of every
accepted type, colour-managed ones too)."""

from __future__ import annotations

import asyncio
import errno
import io
import json
import logging
import os
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from PIL import Image

from app.images.thumbnail_pool import ThumbnailPool, _Worker, worker_environment
from app.images.thumbnail_worker import frame
from tests.images import hostile_files

ROOT = Path(__file__).resolve().parents[2]
MAX_PIXELS = 50_000_000

# Runs in a process of its own, which loads and locks itself down exactly as a decoder does
# (`prepare`, then `lock_down`), then tries the ways out. A file's bytes that took over a
# decoder could do no more than this script.
_ESCAPE = """
import json, os, socket, subprocess, sys
from app.images.thumbnail_worker import lock_down, prepare, render_thumbnail
port, existing, new_file, photo = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
with open(photo, "rb") as source:
    data = source.read()
with open(existing, "rb"):
    pass  # readable before the lock-down
prepare()
sandbox = lock_down()

def attempt(action):
    try:
        action()
    except OSError as exc:
        return exc.errno
    return 0

def connect():
    with socket.create_connection(("127.0.0.1", port), timeout=2):
        pass

def fork():
    pid = os.fork()
    if pid == 0:
        os._exit(0)
    os.waitpid(pid, 0)

outcomes = {
    "connect": attempt(connect),
    "read": attempt(lambda: open(existing, "rb").close()),
    "create": attempt(lambda: open(new_file, "wb").close()),
    "fork": attempt(fork),
    "spawn": attempt(lambda: subprocess.run(["true"], check=False)),
    "pipe": attempt(os.pipe),
}
thumbnail, width, height = render_thumbnail(data, "JPEG", 256, 50_000_000)
outcomes.update(sandbox=sandbox, width=width, height=height, webp=thumbnail[8:12].decode())
print(json.dumps(outcomes))
"""


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A listener of this test's own on loopback: the only place a decoder is sent to."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def open_directory() -> Iterator[Path]:
    """A directory anyone may enter and write to, with a file anyone may read: so what stops
    a decoder there is its sandbox, not file permissions (a root decoder becomes nobody)."""
    directory = Path(tempfile.mkdtemp(prefix="decoder-sandbox-"))
    directory.chmod(0o777)
    try:
        yield directory
    finally:
        for path in directory.iterdir():
            path.unlink()
        directory.rmdir()


def test_locked_down_decoder_cannot_connect_open_create_or_fork(
    listener: socket.socket, open_directory: Path
) -> None:
    existing = open_directory / "readable.txt"
    existing.write_text("anyone may read this")
    existing.chmod(0o666)
    new_file = open_directory / "written-by-a-decoder.txt"
    photo = open_directory / "photo.jpg"
    photo.write_bytes(
        hostile_files.jpeg_with_profile(hostile_files.adobe_rgb_like_profile(), (40, 180, 90))
    )
    photo.chmod(0o666)
    port = listener.getsockname()[1]
    finished = subprocess.run(  # noqa: S603 - this interpreter and a fixed script
        [sys.executable, "-c", _ESCAPE, str(port), str(existing), str(new_file), str(photo)],
        cwd=ROOT,
        env={**worker_environment(), "PYTHONPATH": str(ROOT)},
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert finished.returncode == 0, finished.stderr.decode(errors="replace")
    outcomes = json.loads(finished.stdout)
    # No new descriptor of any kind: the process holds all the numbers it may have.
    assert outcomes["connect"] == errno.EMFILE
    assert outcomes["read"] == errno.EMFILE
    assert outcomes["create"] == errno.EMFILE
    assert outcomes["pipe"] == errno.EMFILE
    assert outcomes["fork"] == errno.EAGAIN  # RLIMIT_NPROC 0
    assert outcomes["spawn"] in (errno.EMFILE, errno.EAGAIN)
    assert not new_file.exists()
    with pytest.raises(BlockingIOError):
        listener.accept()  # nobody knocked
    # Decoding still works after the lock-down: every plugin was loaded before it.
    assert (outcomes["width"], outcomes["height"], outcomes["webp"]) == (64, 48, "WEBP")
    assert outcomes["sandbox"]["no_new_privileges"] is True
    if os.geteuid() == 0:
        assert outcomes["sandbox"]["dropped_root"] is True
        assert outcomes["sandbox"]["own_network"] is True


def _limits(pid: int) -> dict[str, tuple[str, str]]:
    limits = {}
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines()[1:]:
        name, soft, hard = line[:26].strip(), line[26:47].strip(), line[47:68].strip()
        limits[name] = (soft, hard)
    return limits


@pytest.fixture
async def pool() -> AsyncIterator[ThumbnailPool]:
    thumbnails = ThumbnailPool(1, timeout=10.0, memory_limit=1 << 30, max_input=1 << 26)
    try:
        yield thumbnails
    finally:
        await thumbnails.close()


async def test_pool_workers_run_locked_down(pool: ThumbnailPool) -> None:
    for data, pillow_format in (
        (hostile_files.jpeg((640, 480)), "JPEG"),
        (hostile_files.png((300, 200), "RGBA"), "PNG"),
        (hostile_files.many_frame_gif(5), "GIF"),
    ):
        rendered = await pool.render(data, pillow_format, 256, MAX_PIXELS)
        assert rendered.outcome == "ok", (pillow_format, rendered.detail)
    # littlecms works locked down too: a wide-gamut photo comes out in sRGB.
    profile = hostile_files.adobe_rgb_like_profile()
    managed = await pool.render(
        hostile_files.jpeg_with_profile(profile, (40, 180, 90)), "JPEG", 256, MAX_PIXELS
    )
    pixel = Image.open(io.BytesIO(managed.data)).convert("RGB").getpixel((32, 24))
    red, green, _ = pixel  # type: ignore[misc]
    # (40, 180, 90) in that profile is (0, 181, 83) in sRGB.
    assert red < 10, pixel
    assert green > 170, pixel
    (pid,) = pool.pids
    assert pool.workers_started == 1
    limits = await asyncio.to_thread(_limits, pid)
    assert limits["Max file size"] == ("0", "0")
    assert limits["Max processes"] == ("0", "0")
    assert limits["Max core file size"] == ("0", "0")
    soft, hard = limits["Max open files"]
    assert soft == hard
    assert int(soft) <= 8  # stdin, stdout, stderr, the answers' copy: nothing to spare
    status = await asyncio.to_thread(Path(f"/proc/{pid}/status").read_text)
    assert "NoNewPrivs:\t1" in status
    if os.geteuid() == 0:
        assert "Uid:\t65534\t65534\t65534\t65534" in status
        own = os.readlink("/proc/self/ns/net")
        assert os.readlink(f"/proc/{pid}/ns/net") != own


async def test_what_a_decoder_writes_to_stderr_reaches_the_apis_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # A decoder may not write files, and the API's stderr may be one: its messages come
    # through a pipe into the API's log instead. A request it cannot read makes it crash
    # with a traceback.
    caplog.set_level(logging.WARNING, logger="app.images.thumbnail_pool")
    worker = await _Worker.start(1 << 30, 1 << 26)
    stdin = worker.process.stdin
    assert stdin is not None
    stdin.write(frame(b"{not json") + frame(b""))
    await stdin.drain()
    assert await asyncio.wait_for(worker.process.wait(), 30) != 0
    await worker.stop()
    logged = "\n".join(
        record.getMessage() for record in caplog.records if record.name.endswith("thumbnail_pool")
    )
    assert f"thumbnail worker {worker.pid}" in logged
    assert "JSONDecodeError" in logged
