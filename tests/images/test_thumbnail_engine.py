"""The thumbnail engine: the decoder function itself, and the pool of decoder processes
that keeps a hostile file's crash, hang or memory balloon out of the API process."""

from __future__ import annotations

import asyncio
import io
import os
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from PIL import Image, ImageCms, UnidentifiedImageError

from app.images.thumbnail_pool import ThumbnailPool, WorkerFailed, _Worker
from app.images.thumbnail_worker import TooManyPixels, render_thumbnail
from tests.images import hostile_files

MAX_PIXELS = 50_000_000


def _open(data: bytes) -> Image.Image:
    image = Image.open(io.BytesIO(data))
    image.load()
    return image


def test_thumbnail_is_webp_within_size_with_aspect_kept() -> None:
    data, width, height = render_thumbnail(
        hostile_files.jpeg((4000, 3000)), "JPEG", 256, MAX_PIXELS
    )
    image = _open(data)
    assert image.format == "WEBP"
    assert (width, height) == image.size == (256, 192)


def test_small_image_is_never_enlarged() -> None:
    data, width, height = render_thumbnail(hostile_files.png((100, 50)), "PNG", 256, MAX_PIXELS)
    assert (width, height) == _open(data).size == (100, 50)


@pytest.mark.parametrize(
    ("orientation", "size", "red_at"),
    [
        (1, (40, 20), (5, 10)),  # as stored: red on the left
        (3, (40, 20), (35, 10)),  # upside down: red ends up on the right
        (6, (20, 40), (10, 5)),  # rotated 90 degrees: red ends up on top
        (8, (20, 40), (10, 35)),  # rotated 270 degrees: red ends up at the bottom
    ],
)
def test_exif_orientation_is_applied(
    orientation: int, size: tuple[int, int], red_at: tuple[int, int]
) -> None:
    data, _, _ = render_thumbnail(
        hostile_files.two_halves_jpeg(orientation), "JPEG", 256, MAX_PIXELS
    )
    image = _open(data).convert("RGB")
    assert image.size == size
    red, _, blue = image.getpixel(red_at)  # type: ignore[misc]
    assert red > 200, (orientation, image.getpixel(red_at))
    assert blue < 60, (orientation, image.getpixel(red_at))


def test_every_kind_of_metadata_is_removed() -> None:
    original = hostile_files.jpeg_with_gps_and_comment()
    source = _open(original)
    assert source.getexif().get_ifd(hostile_files.GPS_IFD)  # the test file does carry GPS
    assert b"secret-comment" in original
    assert b"secret-xmp" in original
    data, _, _ = render_thumbnail(original, "JPEG", 256, MAX_PIXELS)
    image = _open(data)
    assert not image.getexif()
    assert not {"exif", "xmp", "icc_profile", "comment"} & set(image.info)
    # RIFF chunks: only the image itself (VP8/VP8L/VP8X/ALPH), no EXIF, XMP or ICCP.
    for marker in (b"EXIF", b"XMP ", b"ICCP", b"secret", b"PhoneMaker"):
        assert marker not in data


def test_only_the_first_frame_of_an_animation_is_kept() -> None:
    data, _, _ = render_thumbnail(hostile_files.many_frame_gif(3000), "GIF", 256, MAX_PIXELS)
    image = Image.open(io.BytesIO(data))
    assert image.format == "WEBP"
    assert getattr(image, "n_frames", 1) == 1
    assert b"ANIM" not in data


def test_decompression_bomb_is_refused_before_any_pixel_is_decoded() -> None:
    with pytest.raises((TooManyPixels, Image.DecompressionBombError)):
        render_thumbnail(hostile_files.png_bomb(), "PNG", 256, MAX_PIXELS)


def test_pixel_cap_applies_to_what_the_header_declares() -> None:
    with pytest.raises((TooManyPixels, Image.DecompressionBombWarning)):
        render_thumbnail(hostile_files.png((100, 100)), "PNG", 256, 9_999)


def test_file_is_only_read_by_the_decoder_of_its_sniffed_type() -> None:
    data = hostile_files.png((30, 20))
    assert Image.open(io.BytesIO(data)).format == "PNG"  # Pillow left alone finds a decoder
    with pytest.raises(UnidentifiedImageError):
        render_thumbnail(data, "JPEG", 256, MAX_PIXELS)
    # JPEG's signature with a PNG behind it: the JPEG decoder fails, no PNG decoder looks.
    with pytest.raises(OSError, match=r"Truncated|not identify|broken"):
        render_thumbnail(hostile_files.jpeg_signature_png_body(), "JPEG", 256, MAX_PIXELS)


@pytest.fixture
async def pool() -> AsyncIterator[ThumbnailPool]:
    thumbnails = ThumbnailPool(
        1, timeout=10.0, memory_limit=1024 * 1024 * 1024, max_input=64 * 1024 * 1024
    )
    try:
        yield thumbnails
    finally:
        await thumbnails.close()


async def test_pool_renders_in_a_worker_process_and_reuses_it(pool: ThumbnailPool) -> None:
    first = await pool.render(hostile_files.jpeg((640, 480)), "JPEG", 256, MAX_PIXELS)
    second = await pool.render(hostile_files.png((300, 300)), "PNG", 256, MAX_PIXELS)
    assert first.outcome == second.outcome == "ok"
    assert (first.width, first.height) == (256, 192)
    assert (second.width, second.height) == (256, 256)
    assert _open(first.data).format == "WEBP"
    assert pool.workers_started == 1


async def test_pool_reports_the_decoders_verdicts(pool: ThumbnailPool) -> None:
    bomb = await pool.render(hostile_files.png_bomb(), "PNG", 256, MAX_PIXELS)
    truncated = await pool.render(hostile_files.truncated_jpeg(), "JPEG", 256, MAX_PIXELS)
    assert bomb.outcome == "too_large"
    assert truncated.outcome == "undecodable"
    # Verdicts are answers, not failures: the same worker goes on.
    assert pool.workers_started == 1


async def test_worker_killed_mid_work_is_replaced(pool: ThumbnailPool) -> None:
    slow = hostile_files.large_png(6000)
    job = asyncio.create_task(pool.render(slow, "PNG", 256, MAX_PIXELS))
    for _ in range(500):
        if pool.busy_pids:
            break
        await asyncio.sleep(0.01)
    (victim,) = pool.busy_pids
    await asyncio.sleep(0.05)  # the job has been sent: the decoder is at work
    os.kill(victim, signal.SIGKILL)
    with pytest.raises(WorkerFailed):
        await job
    after = await pool.render(hostile_files.png((10, 10)), "PNG", 256, MAX_PIXELS)
    assert after.outcome == "ok"
    assert pool.workers_started == 2
    assert victim not in pool.busy_pids


async def test_hung_decoder_is_killed_at_the_time_limit() -> None:
    pool = ThumbnailPool(1, timeout=0.05, memory_limit=1024 * 1024 * 1024, max_input=1 << 26)
    try:
        with pytest.raises(WorkerFailed, match="timed out"):
            await pool.render(hostile_files.large_png(6000), "PNG", 256, MAX_PIXELS)
        assert pool.busy_pids == []
    finally:
        await pool.close()


async def test_decoder_that_balloons_past_its_memory_limit_fails_alone() -> None:
    # 6000 x 6000 RGB is 108 MB decoded: more than this worker's 128 MiB leave beside the
    # interpreter. The allocation fails inside the worker, which answers and goes on.
    pool = ThumbnailPool(1, timeout=20.0, memory_limit=128 * 1024 * 1024, max_input=1 << 26)
    try:
        rendered = await pool.render(hostile_files.large_png(6000), "PNG", 256, MAX_PIXELS)
        assert rendered.outcome == "too_large"
        assert rendered.detail == "memory"
        # The pool, and this process, go on.
        after = await pool.render(hostile_files.png((10, 10)), "PNG", 256, MAX_PIXELS)
        assert after.outcome == "ok"
    finally:
        await pool.close()


async def test_workers_do_not_inherit_the_apis_secrets(
    pool: ThumbnailPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SECRET_KEY", "the-apis-secret-key-must-not-reach-a-decoder")
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://gallery:db-password@db/gallery")
    rendered = await pool.render(hostile_files.png((10, 10)), "PNG", 256, MAX_PIXELS)
    assert rendered.outcome == "ok"
    (pid,) = pool.pids
    environment = await asyncio.to_thread(Path(f"/proc/{pid}/environ").read_bytes)
    assert b"PATH=" in environment  # the file is readable and holds the worker's environment
    assert b"the-apis-secret-key" not in environment
    assert b"db-password" not in environment


def _srgb_of(profile: bytes, colour: tuple[int, int, int]) -> tuple[int, int, int]:
    """What littlecms makes of `colour` in `profile`, in sRGB."""
    source = ImageCms.ImageCmsProfile(io.BytesIO(profile))
    pixel = Image.new("RGB", (1, 1), colour)
    converted = ImageCms.profileToProfile(pixel, source, ImageCms.createProfile("sRGB"))
    assert converted is not None
    red, green, blue = converted.getpixel((0, 0))  # type: ignore[misc]
    return red, green, blue


def _centre(data: bytes) -> tuple[int, int, int]:
    image = _open(data).convert("RGB")
    red, green, blue = image.getpixel((image.width // 2, image.height // 2))  # type: ignore[misc]
    return red, green, blue


def _no_metadata(data: bytes) -> None:
    image = _open(data)
    assert not image.getexif()
    assert not {"exif", "xmp", "icc_profile"} & set(image.info)
    for marker in (b"EXIF", b"XMP ", b"ICCP", b"PhoneMaker"):
        assert marker not in data


def test_colour_managed_original_is_converted_to_srgb_and_its_profile_removed() -> None:
    profile = hostile_files.adobe_rgb_like_profile()
    colour = (40, 180, 90)
    expected = _srgb_of(profile, colour)
    # The profile matters for this colour: ignoring it would be visibly wrong.
    assert abs(expected[0] - colour[0]) > 25
    data, _, _ = render_thumbnail(
        hostile_files.jpeg_with_profile(profile, colour), "JPEG", 256, MAX_PIXELS
    )
    got = _centre(data)
    assert all(abs(a - b) <= 4 for a, b in zip(got, expected, strict=True)), (got, expected)
    _no_metadata(data)


@pytest.mark.parametrize(
    "profile",
    [
        b"not an icc profile at all",
        hostile_files.adobe_rgb_like_profile()[:200],  # cut inside its tag table
        hostile_files.adobe_rgb_like_profile(tag_count=0xFFFFFFFF),
        hostile_files.adobe_rgb_like_profile(colorant_offset=0xFFFFFF00),  # past its end
        ImageCms.ImageCmsProfile(ImageCms.createProfile("LAB")).tobytes(),  # not for RGB
    ],
)
def test_broken_or_unfit_icc_profile_leaves_the_colours_alone(profile: bytes) -> None:
    colour = (40, 180, 90)
    data, width, height = render_thumbnail(
        hostile_files.jpeg_with_profile(profile, colour), "JPEG", 256, MAX_PIXELS
    )
    assert (width, height) == (64, 48)
    got = _centre(data)
    assert all(abs(a - b) <= 4 for a, b in zip(got, colour, strict=True)), got
    _no_metadata(data)


# A stand-in for a decoder taken over by a hostile file: it reads one job, then answers
# with the frames the test gives it (length-prefixed, as the real worker writes them).
_HOSTILE_WORKER = """
import struct, sys
read = sys.stdin.buffer.read
for _ in range(2):
    (n,) = struct.unpack(">I", read(4)); read(n)
out = sys.stdout.buffer
for frame in [bytes.fromhex(x) for x in sys.argv[1:]]:
    out.write(struct.pack(">I", len(frame)) + frame)
out.flush()
sys.stdin.buffer.read()
"""


def _webp(size: tuple[int, int]) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size).save(buffer, "WEBP")
    return buffer.getvalue()


@pytest.mark.parametrize(
    ("header", "thumbnail"),
    [
        pytest.param(b"[" * 4000, b"x", id="nested-json-header"),
        pytest.param(b'{"status": "ok", "width": 8, "height": 8}', b"SECRET=stolen", id="not-webp"),
        pytest.param(b'{"status": "ok", "width": 8, "height": 8}', _webp((8, 8))[:-4], id="cut"),
        pytest.param(
            b'{"status": "ok", "width": 300, "height": 8}', _webp((300, 8)), id="larger-than-asked"
        ),
        pytest.param(b'{"status": "ok", "width": 0, "height": 8}', _webp((8, 8)), id="zero"),
    ],
)
async def test_a_hostile_workers_answer_is_a_failed_worker_never_a_stored_thumbnail(
    header: bytes, thumbnail: bytes
) -> None:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOSTILE_WORKER,
        header.hex(),
        thumbnail.hex(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = _Worker(process)
    try:
        with pytest.raises(WorkerFailed, match="broke the protocol"):
            await worker.run({"format": "PNG", "size": 256, "max_pixels": 10**6}, b"original")
    finally:
        await worker.stop()


async def test_a_well_formed_answer_is_taken() -> None:
    webp = _webp((256, 100))
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        _HOSTILE_WORKER,
        b'{"status": "ok", "width": 256, "height": 100}'.hex(),
        webp.hex(),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    worker = _Worker(process)
    try:
        rendered = await worker.run({"format": "PNG", "size": 256, "max_pixels": 10**6}, b"x")
    finally:
        await worker.stop()
    assert (rendered.outcome, rendered.data, rendered.width) == ("ok", webp, 256)
