"""Hostile and broken images get clear errors; good ones decode to RGB."""

from __future__ import annotations

import io

import pytest
from PIL import Image

from shared.errors import InvalidInput, TooLarge
from shared.imaging import ImageLimits, decode_image, read_uri


def _png(size=(64, 48), mode="RGB") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, 128).save(buf, format="PNG")
    return buf.getvalue()


def test_good_image_decodes_to_rgb() -> None:
    image = decode_image(_png(mode="L"))
    assert image.mode == "RGB" and image.size == (64, 48)


@pytest.mark.parametrize(("payload", "error", "message"), [
    (b"", InvalidInput, "empty payload"),
    (b"hello, not an image", InvalidInput, "no decoder recognises"),
    (_png()[:60], InvalidInput, "complete, decodable image"),
])
def test_broken_payloads(payload: bytes, error: type, message: str) -> None:
    with pytest.raises(error, match=message):
        decode_image(payload)


def test_decompression_bomb_rejected_from_header() -> None:
    # A 1x1-pixel-per-byte PNG of 10000x10000 compresses to a few KB but would decode to 300 MB.
    bomb = _png(size=(10000, 10000), mode="1")
    assert len(bomb) < 100_000
    with pytest.raises(TooLarge, match="expected at most 1000000 pixels"):
        decode_image(bomb, ImageLimits(max_pixels=1_000_000))


def test_oversize_bytes_and_tiny_images() -> None:
    with pytest.raises(TooLarge, match="expected at most 100 bytes"):
        decode_image(_png(), ImageLimits(max_bytes=100))
    with pytest.raises(InvalidInput, match="both sides >= 16"):
        decode_image(_png(size=(8, 8)))


def test_read_uri_file_and_errors(tmp_path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_png())
    assert read_uri(str(path)) == path.read_bytes()
    assert read_uri(path.as_uri()) == path.read_bytes()
    with pytest.raises(InvalidInput, match="existing image file"):
        read_uri(str(tmp_path / "missing.png"))
    with pytest.raises(InvalidInput, match="scheme 'ftp'"):
        read_uri("ftp://example/a.png")
