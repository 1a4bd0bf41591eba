"""Hostile and broken images get clear errors; good ones decode to RGB; the intake reads every kind of source."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from shared.errors import InvalidInput, TooLarge
from shared.imaging import ImageIntake, ImageLimits, ImageSource, IntakePolicy, deadline_after
from shared.imaging.decode import decode_image
from shared.imaging.intake import read_uri


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


def test_read_uri_turns_an_unreadable_file_into_invalid_input(tmp_path, monkeypatch) -> None:
    folder = tmp_path / "a-folder.png"
    folder.mkdir()
    with pytest.raises(InvalidInput, match="existing image file"):
        read_uri(str(folder))
    path = tmp_path / "a.png"
    path.write_bytes(_png())

    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(Path, "open", refuse)
    with pytest.raises(InvalidInput, match="expected a readable image file"):
        read_uri(str(path))


def test_intake_loads_inline_bytes_and_uris(tmp_path) -> None:
    path = tmp_path / "a.png"
    data = _png(mode="L")
    path.write_bytes(data)
    intake = ImageIntake()
    for source in (ImageSource(data=data), ImageSource(uri=str(path)), ImageSource(uri=path.as_uri())):
        loaded = intake.load(source, deadline=deadline_after(5.0))
        assert loaded.raw == data and loaded.image.mode == "RGB" and loaded.image.size == (64, 48)


def test_intake_errors_name_the_image() -> None:
    intake = ImageIntake(ImageLimits(max_bytes=100))
    with pytest.raises(InvalidInput, match=r"^image #3: expected `data` \(bytes\) or `uri`, got neither"):
        intake.load(ImageSource(id="x"), name="image #3")
    with pytest.raises(TooLarge, match="^query image: expected at most 100 bytes"):
        intake.load(ImageSource(data=_png()), name="query image")
    with pytest.raises(InvalidInput, match="^inline data: expected image bytes"):
        intake.load(ImageSource(data=b""))
    with pytest.raises(ValueError, match="not both"):
        ImageSource(data=b"x", uri="a.png")


def test_intake_policy_refuses_what_it_does_not_allow(tmp_path) -> None:
    path = tmp_path / "a.png"
    path.write_bytes(_png())
    no_urls = ImageIntake(policy=IntakePolicy(allow_http=False))
    assert no_urls.load(ImageSource(uri=str(path))).image.size == (64, 48)
    with pytest.raises(InvalidInput, match="fetches no URLs"):
        no_urls.load(ImageSource(uri="http://127.0.0.1:9/a.png"))
    no_files = ImageIntake(policy=IntakePolicy(allow_files=False))
    for uri in (str(path), path.as_uri()):
        with pytest.raises(InvalidInput, match="reads no files"):
            no_files.load(ImageSource(uri=uri))
    assert no_files.load(ImageSource(data=_png())).image.size == (64, 48)  # inline bytes are always allowed


def test_a_past_deadline_bounds_the_fetch() -> None:
    start = time.monotonic()
    with pytest.raises(InvalidInput, match="expected a reachable image URL"):
        # A non-routable address would hang until fetch_timeout_s (10 s) without the caller's deadline.
        ImageIntake().load(ImageSource(uri="http://10.255.255.1/a.png"), deadline=time.monotonic() - 1)
    assert time.monotonic() - start < 5
