"""The quick signature check for the common formats gives the signature library's answer
(it only saves the library's scan), judges bytes and never a header, and leaves everything
else to the library."""

from __future__ import annotations

import os

import pytest

from app.images.checker import _common_signature, _library_signature, sniff_image
from tests.support.image_host import make_image

FORMATS = ["PNG", "JPEG", "GIF", "WEBP", "AVIF", "BMP"]
SIGNATURES = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"GIF87a",
    b"GIF89a",
    b"RIFF\x00\x00\x00\x00WEBP",
    b"\x00\x00\x00 ftypavif",
    b"\x00\x00\x00 ftypavis",
    b"BM",
]


@pytest.mark.parametrize("fmt", FORMATS)
@pytest.mark.parametrize("size", [(1, 1), (40, 30), (600, 400)])
def test_real_images_get_the_librarys_answer(fmt: str, size: tuple[int, int]) -> None:
    data = make_image(fmt, size)
    assert _common_signature(data) is not None
    assert _common_signature(data) == _library_signature(data)


@pytest.mark.parametrize("signature", SIGNATURES)
@pytest.mark.parametrize("tail", [0, 1, 100, 5000])
def test_signature_with_any_tail_gets_the_librarys_answer(signature: bytes, tail: int) -> None:
    for _ in range(10):
        data = signature + os.urandom(tail)
        if data.startswith(b"\xff\xd8\xff\xf7"):
            # JPEG-LS, not JPEG: the quick path leaves it to the library (1 tail in 256).
            assert _common_signature(data) is None
            assert _library_signature(data) == "image/jls"
        else:
            assert _common_signature(data) == _library_signature(data)


def test_jpeg_ls_is_left_to_the_library() -> None:
    data = b"\xff\xd8\xff\xf7" + bytes(100)
    assert _common_signature(data) is None
    assert _library_signature(data) == "image/jls"


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x89PN",  # a signature cut short
        b"GIF8",
        b"RIFF\x00\x00\x00\x00WAVEfmt ",  # RIFF, but sound
        b"\x00\x00\x00 ftypisom",  # ISO media, but a video
        b"<html><body>\x89PNG\r\n\x1a\n</body></html>",  # a signature later in the file
        b"%PDF-1.7\n",
        b"\xff\xd8\xff\xf7\x00\x0b",  # JPEG-LS: another codec, which browsers do not show
        make_image("TIFF"),
    ],
)
def test_other_bytes_are_left_to_the_library(data: bytes) -> None:
    assert _common_signature(data) is None


def test_other_image_types_still_come_from_the_library() -> None:
    sniffed = sniff_image(make_image("TIFF", (4, 3)), complete=True)
    assert sniffed is not None
    assert sniffed.content_type == "image/tiff"


def test_avif_with_a_28_byte_file_type_box_is_avif() -> None:
    # Many encoders write a 28-byte `ftyp` box (three compatible brands); the library takes
    # its size prefix for an MP4 video's and called such an AVIF "video/mp4".
    data = make_image("AVIF", (40, 30))
    assert data[:4] == (32).to_bytes(4, "big")
    short_box = (28).to_bytes(4, "big") + data[4:24] + data[28:]
    sniffed = sniff_image(short_box, complete=True)
    assert sniffed is not None
    assert (sniffed.content_type, sniffed.width, sniffed.height) == ("image/avif", 40, 30)


def test_a_bitmap_signature_still_needs_a_bitmap_header() -> None:
    assert sniff_image(b"BM" + b"text that merely starts like a bitmap", complete=True) is None
