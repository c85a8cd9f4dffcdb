"""Reading an image's real format and dimensions from its first bytes."""

from __future__ import annotations

import io
import os

import pytest
from PIL import Image as PILImage

from app.images.checker import SNIFF_WINDOW, sniff_image
from tests.support.image_host import make_image


@pytest.mark.parametrize(
    ("fmt", "media_type"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("GIF", "image/gif"),
        ("WEBP", "image/webp"),
        ("AVIF", "image/avif"),
        ("BMP", "image/bmp"),
    ],
)
def test_format_and_dimensions_come_from_the_bytes(fmt: str, media_type: str) -> None:
    sniffed = sniff_image(make_image(fmt, (40, 30)), complete=True)
    assert sniffed is not None
    assert (sniffed.content_type, sniffed.width, sniffed.height) == (media_type, 40, 30)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "AVIF"])
def test_large_images_are_read_from_the_window_alone(fmt: str) -> None:
    noise = PILImage.frombytes("RGB", (600, 400), os.urandom(600 * 400 * 3))
    buffer = io.BytesIO()
    noise.save(buffer, format=fmt)
    data = buffer.getvalue()
    assert len(data) > SNIFF_WINDOW
    sniffed = sniff_image(data[:SNIFF_WINDOW], complete=False)
    assert sniffed is not None
    assert (sniffed.width, sniffed.height) == (600, 400)


@pytest.mark.parametrize(
    "data",
    [
        b"<!doctype html><html><body>not an image</body></html>",
        b'{"json": true}',
        b"plain text",
        b"BM but only text after a bitmap's two-byte signature",
        b"",
        make_image("PNG")[:20],  # a PNG cut before its header: no dimensions, whole file
    ],
)
def test_bytes_that_are_no_readable_image_are_not_an_image(data: bytes) -> None:
    assert sniff_image(data, complete=True) is None


def test_svg_is_recognised_as_svg_so_the_allowed_types_can_refuse_it() -> None:
    svg = b"<?xml version='1.0'?><svg xmlns='http://www.w3.org/2000/svg' width='4' height='4'/>"
    sniffed = sniff_image(svg, complete=True)
    assert sniffed is not None
    assert sniffed.content_type == "image/svg+xml"
