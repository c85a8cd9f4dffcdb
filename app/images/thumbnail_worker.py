"""The decoder process: turns one original at a time into a WebP thumbnail.

Started by `app.images.thumbnail_pool` as `python -m app.images.thumbnail_worker LIMIT`.
It caps its own address space (RLIMIT_AS) before it reads a byte of anyone's file, so a
file that balloons the decoder fails here, in a process the API can replace, and it talks
to the API over its pipes in length-prefixed frames (JSON and raw bytes, never pickle: a
decoder subverted by a hostile file must not be able to run code in the API by answering).

Only the standard library and Pillow are imported: nothing of the app's settings, database
or network code is loaded into a process that parses strangers' bytes.

Once everything decoding needs is loaded (`prepare`: every Pillow plugin, littlecms, the
WebP encoder, warmed by a few tiny images of our own), the process locks itself down
(`lock_down`) before it reads the first request: no new file descriptors (RLIMIT_NOFILE at
what it holds, so no socket, no file, no pipe), no file growth (RLIMIT_FSIZE 0), no child
process (RLIMIT_NPROC 0; a decoder started as root first becomes `nobody`, because the
kernel never applies RLIMIT_NPROC to root), no core file, no new privileges
(PR_SET_NO_NEW_PRIVS), and where the kernel lets it an empty network namespace of its own
(only a loopback interface that is down). A file that takes over a decoder finds a process
that can only answer on its pipe.
"""

from __future__ import annotations

import ctypes
import functools
import io
import json
import os
import resource
import signal
import struct
import sys
import warnings
from typing import IO, Any

from PIL import AvifImagePlugin, ExifTags, Image, ImageCms

# The Pillow decoder for each image type the server accepts; any other type gets no
# thumbnail. A file is only ever opened by the decoder of the type its first bytes showed,
# so a polyglot cannot reach a second parser.
PILLOW_FORMATS = {
    "image/png": "PNG",
    "image/jpeg": "JPEG",
    "image/gif": "GIF",
    "image/webp": "WEBP",
    "image/avif": "AVIF",
    "image/bmp": "BMP",
}
WEBP_QUALITY = 80
# Enough for any header we send; a frame announcing more is a broken peer.
MAX_HEADER_BYTES = 4096
_LENGTH = struct.Struct(">I")
_ORIENTATION_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


# Linux's values (<sched.h>, <linux/prctl.h>); the os module of Python 3.11 has neither.
_CLONE_NEWNET = 0x40000000
_PR_SET_NO_NEW_PRIVS = 38
# Who a decoder started as root runs as (the kernel exempts root from RLIMIT_NPROC).
_NOBODY = 65534


class TooManyPixels(Exception):
    """The image declares more pixels than allowed."""


def _target_mode(image: Image.Image) -> str:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or ("transparency" in image.info)
    return "RGBA" if has_alpha else "RGB"


@functools.cache
def _srgb() -> ImageCms.ImageCmsProfile:
    return ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


def _to_srgb(image: Image.Image, icc_profile: bytes | None, mode: str) -> Image.Image:
    """`image` in `mode`, its colours taken from its embedded ICC profile to sRGB (what a
    browser assumes of an untagged WebP). A profile littlecms refuses, or one that does not
    fit the image's mode, means no conversion: a hostile profile costs colour, not the
    thumbnail."""
    if icc_profile:
        try:
            source = ImageCms.ImageCmsProfile(io.BytesIO(icc_profile))
            converted = ImageCms.profileToProfile(image, source, _srgb(), outputMode=mode)
        except MemoryError:
            raise
        except Exception:  # noqa: S110 - any refusal of the profile means: leave the colours
            pass
        else:
            if converted is not None:
                return converted
    return image if image.mode == mode else image.convert(mode)


def render_thumbnail(
    data: bytes, pillow_format: str, size: int, max_pixels: int
) -> tuple[bytes, int, int]:
    """A WebP of the first frame of `data`, its longest side at most `size` (never
    enlarged, aspect kept), turned upright by its EXIF orientation, with no metadata.
    Raises `TooManyPixels`, or Pillow's own errors for bytes it cannot decode."""
    Image.MAX_IMAGE_PIXELS = max_pixels
    with warnings.catch_warnings():
        # Pillow warns between MAX_IMAGE_PIXELS and twice that; here the limit is the limit.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        with Image.open(io.BytesIO(data), formats=[pillow_format]) as opened:
            if opened.width * opened.height > max_pixels:
                raise TooManyPixels()
            orientation = opened.getexif().get(ExifTags.Base.Orientation)
            # JPEG: decode at 1/2, 1/4 or 1/8 scale, the smallest still at least the
            # thumbnail's size (libvips' shrink-on-load rule), then Lanczos for the rest:
            # most of the speed and memory saved on a large photo. Against a full decode
            # and Lanczos, a 256-px thumbnail of a 4000x3000 photo is at 42.2 dB PSNR this
            # way and 42.8 dB drafting to twice the size, for about a third more CPU.
            opened.draft("RGB", (size, size))
            mode = _target_mode(opened)
            icc_profile = opened.info.get("icc_profile")
            # With a profile, colours are converted at thumbnail size (cheap), from the
            # decoded mode when the profile describes it (a CMYK photo's profile is CMYK).
            keep = opened.mode == mode or (icc_profile and opened.mode == "CMYK")
            image = opened if keep else opened.convert(mode)
            image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
            image = _to_srgb(image, icc_profile, mode)
            transpose = (
                _ORIENTATION_TRANSPOSE.get(orientation) if isinstance(orientation, int) else None
            )
            if transpose is not None:
                image = image.transpose(transpose)
            # A new image from the pixels alone: no EXIF (GPS), XMP, ICC profile or comment
            # of the original can ride along into the output.
            clean = Image.frombytes(image.mode, image.size, image.tobytes())
    output = io.BytesIO()
    clean.save(output, "WEBP", quality=WEBP_QUALITY, method=4)
    return output.getvalue(), clean.width, clean.height


def _handle(header: dict[str, Any], data: bytes) -> tuple[dict[str, Any], bytes]:
    try:
        thumbnail, width, height = render_thumbnail(
            data, str(header["format"]), int(header["size"]), int(header["max_pixels"])
        )
    except (TooManyPixels, Image.DecompressionBombError, Image.DecompressionBombWarning):
        return {"status": "too_large"}, b""
    except MemoryError:
        return {"status": "too_large", "detail": "memory"}, b""
    except Exception as exc:  # every decoder failure is the file's fault, not the process's
        return {"status": "undecodable", "detail": type(exc).__name__}, b""
    return {"status": "ok", "width": width, "height": height}, thumbnail


def read_frame(stream: IO[bytes], limit: int) -> bytes | None:
    """One length-prefixed frame, or None at a clean end of the stream."""
    prefix = stream.read(_LENGTH.size)
    if not prefix:
        return None
    if len(prefix) != _LENGTH.size:
        raise EOFError("cut frame")
    (length,) = _LENGTH.unpack(prefix)
    if length > limit:
        raise ValueError("frame too long")
    payload = stream.read(length)
    if len(payload) != length:
        raise EOFError("cut frame")
    return payload


def frame(payload: bytes) -> bytes:
    """`payload` with its length in front."""
    return _LENGTH.pack(len(payload)) + payload


def _warm_up_images() -> list[tuple[bytes, str]]:
    """A tiny image of every accepted type, with what makes a decoder load more code (EXIF
    orientation, an ICC profile, transparency, animation)."""
    samples: list[tuple[bytes, str]] = []
    photo = Image.new("RGB", (16, 8), (200, 100, 50))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    icc = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    for image, pillow_format, options in (
        (photo, "JPEG", {"exif": exif, "icc_profile": icc}),
        (photo.convert("CMYK"), "JPEG", {}),
        (photo.convert("RGBA"), "PNG", {"icc_profile": icc}),
        (photo.convert("P"), "GIF", {"save_all": True, "append_images": [photo.convert("P")]}),
        (photo.convert("RGBA"), "WEBP", {}),
        (photo, "BMP", {}),
        (photo, "AVIF", {}),
    ):
        output = io.BytesIO()
        try:
            image.save(output, pillow_format, **options)
        except (OSError, KeyError, ValueError):
            continue  # this Pillow build cannot write the type: it cannot read it either
        samples.append((output.getvalue(), pillow_format))
    return samples


def prepare() -> None:
    """Load everything decoding will need while files can still be opened: Pillow imports
    its plugins and native modules lazily, on first use, which a locked-down process could
    not do."""
    Image.init()  # every plugin module, so `Image.open(formats=[...])` finds its decoder
    AvifImagePlugin.DEFAULT_MAX_THREADS = 1  # libavif's threads would be child tasks
    _srgb()
    for data, pillow_format in _warm_up_images():
        render_thumbnail(data, pillow_format, 4, 1_000_000)


def _libc_call(name: str, *arguments: int) -> bool:
    libc = ctypes.CDLL(None, use_errno=True)
    return int(getattr(libc, name)(*arguments)) == 0


def _fill_descriptor_holes() -> int:
    """The number one past the highest open file descriptor, every lower number made
    taken (a free low number would be a new descriptor under RLIMIT_NOFILE)."""
    highest = max(int(name) for name in os.listdir("/proc/self/fd"))
    open_ones = []
    for descriptor in range(highest + 1):
        try:
            os.fstat(descriptor)
        except OSError:
            continue
        open_ones.append(descriptor)
    for descriptor in range(max(open_ones) + 1):
        if descriptor not in open_ones:
            os.dup2(2, descriptor)
    return max(open_ones) + 1


def lock_down() -> dict[str, bool]:
    """Take from this process every way out but the descriptors it holds (see the module's
    docstring). Returns which optional steps the kernel allowed."""
    # Writing past RLIMIT_FSIZE fails with EFBIG instead of killing the process.
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    own_network = _libc_call("unshare", _CLONE_NEWNET)  # needs CAP_SYS_ADMIN
    dropped_root = False
    if os.geteuid() == 0:
        try:
            os.setgroups([])
            os.setgid(_NOBODY)
            os.setuid(_NOBODY)  # and with root's uid go all its capabilities
            dropped_root = True
        except OSError:  # root without CAP_SETUID/CAP_SETGID: the limits below still hold
            pass
    descriptors = _fill_descriptor_holes()
    for limit, value in (
        (resource.RLIMIT_NOFILE, descriptors),
        (resource.RLIMIT_FSIZE, 0),
        (resource.RLIMIT_NPROC, 0),
        (resource.RLIMIT_CORE, 0),
    ):
        resource.setrlimit(limit, (value, value))
    no_new_privileges = _libc_call("prctl", _PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0)
    return {
        "own_network": own_network,
        "dropped_root": dropped_root,
        "no_new_privileges": no_new_privileges,
    }


def main() -> None:
    memory_limit, max_input = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file
    # Answers go out on a private copy of stdout; anything a library prints lands on stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    prepare()
    sandbox = lock_down()
    # The first answer says the process is ready, and how far the kernel let it lock down.
    answers.write(frame(json.dumps({"status": "ready", **sandbox}).encode()) + frame(b""))
    answers.flush()
    requests = sys.stdin.buffer
    while True:
        raw_header = read_frame(requests, MAX_HEADER_BYTES)
        if raw_header is None:
            return
        data = read_frame(requests, max_input)
        if data is None:
            return
        header, thumbnail = _handle(json.loads(raw_header), data)
        answers.write(frame(json.dumps(header).encode()) + frame(thumbnail))
        answers.flush()


if __name__ == "__main__":
    main()
