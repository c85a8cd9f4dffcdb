"""The decoder process: turns one original at a time into a WebP thumbnail.

Started by `app.images.thumbnail_pool` as `python -m app.images.thumbnail_worker LIMIT`.
It caps its own address space (RLIMIT_AS) before it reads a byte of anyone's file, so a
file that balloons the decoder fails here, in a process the API can replace, and it talks
to the API over its pipes in length-prefixed frames (JSON and raw bytes, never pickle: a
decoder subverted by a hostile file must not be able to run code in the API by answering).

Only the standard library and Pillow are imported: nothing of the app's settings, database
or network code is loaded into a process that parses strangers' bytes.
"""

from __future__ import annotations

import io
import json
import os
import resource
import struct
import sys
import warnings
from typing import IO, Any

from PIL import ExifTags, Image

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


class TooManyPixels(Exception):
    """The image declares more pixels than allowed."""


def _target_mode(image: Image.Image) -> str:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or ("transparency" in image.info)
    return "RGBA" if has_alpha else "RGB"


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
            # JPEG: decode at 1/2, 1/4 or 1/8 scale, still at least twice the thumbnail,
            # which is most of the speed and memory saved on a large photo.
            opened.draft("RGB", (size * 2, size * 2))
            mode = _target_mode(opened)
            image = opened if opened.mode == mode else opened.convert(mode)
            image.thumbnail((size, size), Image.Resampling.LANCZOS, reducing_gap=2.0)
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


def main() -> None:
    memory_limit, max_input = int(sys.argv[1]), int(sys.argv[2])
    resource.setrlimit(resource.RLIMIT_AS, (memory_limit, memory_limit))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash leaves no core file
    # Answers go out on a private copy of stdout; anything a library prints lands on stderr.
    answers = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
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
