"""Image files for the media tests, made here with Pillow and by hand: ordinary ones, and the
hostile kinds a stranger's image host may serve (bombs, truncated files, polyglots...)."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image

GPS_IFD = 0x8825
ORIENTATION = 0x0112


def jpeg(size: tuple[int, int], colour: tuple[int, int, int] = (200, 30, 30)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def noisy_jpeg(size: tuple[int, int]) -> bytes:
    """A JPEG of noise: about as many bytes as a photo of its size."""
    buffer = io.BytesIO()
    Image.effect_noise(size, 60).convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def png(size: tuple[int, int], mode: str = "RGB") -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size).save(buffer, "PNG")
    return buffer.getvalue()


def two_halves_jpeg(orientation: int) -> bytes:
    """A 40x20 JPEG, left half red and right half blue, tagged with an EXIF orientation."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=95, exif=exif.tobytes())
    return buffer.getvalue()


def jpeg_with_gps_and_comment() -> bytes:
    """A JPEG carrying GPS coordinates in EXIF, an XMP packet, an ICC profile and a comment."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    gps = exif.get_ifd(GPS_IFD)
    gps[1] = "N"
    gps[2] = (48.0, 51.0, 29.0)
    gps[3] = "E"
    gps[4] = (2.0, 17.0, 40.0)
    buffer = io.BytesIO()
    Image.new("RGB", (64, 48), (10, 120, 10)).save(
        buffer,
        "JPEG",
        exif=exif.tobytes(),
        comment=b"secret-comment-home-address",
        xmp=b"<x:xmpmeta xmlns:x='adobe:ns:meta/'>secret-xmp</x:xmpmeta>",
        icc_profile=b"\0" * 128,
    )
    return buffer.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A PNG of a few hundred bytes whose header declares `width` x `height` pixels: a
    decoder that trusts it allocates tens of gigabytes."""
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    # The first rows of zeros, compressed: the file stays tiny whatever it declares.
    pixels = zlib.compress(b"\0" * (width * 3 + 1) * 4, 9)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", pixels)
        + _png_chunk(b"IEND", b"")
    )


def truncated_jpeg() -> bytes:
    """A real photo-sized JPEG cut in the middle of its pixel data."""
    data = jpeg((800, 600))
    return data[: len(data) // 2]


POLYGLOT_SCRIPT = b"<html><script>document.title='pwned'</script></html>"


def png_html_polyglot() -> bytes:
    """A valid PNG that is also an HTML page with a script after its end chunk: harmless
    served as `image/png` with `nosniff`, dangerous if a browser sniffed it as HTML."""
    return png((30, 20)) + POLYGLOT_SCRIPT


def jpeg_signature_png_body() -> bytes:
    """JPEG's first bytes, then a whole PNG: a decoder chosen by anything but the sniffed
    type (a PNG parser hunting for its signature) would read the hidden PNG."""
    return b"\xff\xd8\xff\xe0" + png((30, 20))


def many_frame_gif(frames: int = 3000) -> bytes:
    """An animated GIF with thousands of tiny frames."""
    images = [Image.new("P", (16, 16), index % 256) for index in range(frames)]
    buffer = io.BytesIO()
    images[0].save(buffer, "GIF", save_all=True, append_images=images[1:], duration=10, loop=0)
    return buffer.getvalue()


def large_png(side: int = 6000) -> bytes:
    """A single-colour PNG of side x side pixels: small on the wire, slow and large to
    decode (used to catch a decoder mid-work and to overrun a decoder's memory limit)."""
    buffer = io.BytesIO()
    Image.new("RGB", (side, side), (90, 90, 90)).save(buffer, "PNG", compress_level=1)
    return buffer.getvalue()


def _s15(value: float) -> bytes:
    return struct.pack(">i", round(value * 65536))


def _xyz_tag(x: float, y: float, z: float) -> bytes:
    return b"XYZ \0\0\0\0" + _s15(x) + _s15(y) + _s15(z)


def adobe_rgb_like_profile(
    *, tag_count: int | None = None, colorant_offset: int | None = None
) -> bytes:
    """An ICC v2 RGB matrix/TRC profile with Adobe RGB (1998)'s primaries (D50-adapted) and
    gamma 2.2: a wide-gamut, non-sRGB profile as cameras embed, written by hand (Pillow
    can make only sRGB, LAB and XYZ profiles). `tag_count` and `colorant_offset` break it:
    a tag table that claims more tags, a red colorant said to lie past the end."""
    description = b"Adobe RGB-like test profile\0"
    tags = [
        (
            b"desc",
            b"desc\0\0\0\0"
            + struct.pack(">I", len(description))
            + description
            + b"\0" * 4
            + b"\0" * 4
            + b"\0" * 2
            + b"\0"
            + b"\0" * 67,
        ),
        (b"wtpt", _xyz_tag(0.9642, 1.0, 0.8249)),
        (b"rXYZ", _xyz_tag(0.6097, 0.3111, 0.0195)),
        (b"gXYZ", _xyz_tag(0.2053, 0.6257, 0.0609)),
        (b"bXYZ", _xyz_tag(0.1492, 0.0632, 0.7446)),
        (b"rTRC", b"curv\0\0\0\0" + struct.pack(">IH", 1, 563) + b"\0\0"),
        (b"cprt", b"text\0\0\0\0" + b"none\0\0\0\0"),
    ]
    tags.insert(6, (b"gTRC", tags[5][1]))
    tags.insert(7, (b"bTRC", tags[5][1]))
    offset = 128 + 4 + 12 * len(tags)
    table, body = b"", b""
    for signature, data in tags:
        at = offset + len(body)
        if signature == b"rXYZ" and colorant_offset is not None:
            at = colorant_offset
        table += signature + struct.pack(">II", at, len(data))
        body += data + b"\0" * (-len(data) % 4)
    size = offset + len(body)
    header = (
        struct.pack(">I", size)
        + b"\0\0\0\0"
        + struct.pack(">I", 0x02100000)
        + b"mntrRGB XYZ "
        + b"\0" * 12
        + b"acsp"
        + b"\0" * 24
        + struct.pack(">I", 0)
        + _s15(0.9642)
        + _s15(1.0)
        + _s15(0.8249)
        + b"\0" * 48
    )
    assert len(header) == 128
    count = len(tags) if tag_count is None else tag_count
    return header + struct.pack(">I", count) + table + body


def jpeg_with_profile(
    profile: bytes, colour: tuple[int, int, int], size: tuple[int, int] = (64, 48)
) -> bytes:
    """A JPEG of one colour carrying `profile` (and EXIF, to see that it goes too)."""
    exif = Image.Exif()
    exif[0x010F] = "PhoneMaker"  # Make
    buffer = io.BytesIO()
    Image.new("RGB", size, colour).save(
        buffer, "JPEG", quality=98, subsampling=0, icc_profile=profile, exif=exif.tobytes()
    )
    return buffer.getvalue()
