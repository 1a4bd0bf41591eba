"""Safe image decoding: never trust a payload's size, type or pixel count.

Every image that enters the system (catalogue uploads, shopper photos) passes through `decode_image`, by way
of `ImageIntake.load` (intake.py). It checks the byte size before decoding, the format against an allow-list,
the pixel count from the header before any pixel is decompressed (decompression bombs), and then decodes fully
so truncated files fail here with a clear message instead of deep inside the model.

It decodes straight to a working size: the model squashes every picture to its input size (224 px), so a
40-megapixel upload kept at full size only costs memory (an event of twelve 6300x6300 PNGs took ingest from
1.2 to 3.3 GB, scripts/pixel_flood.py). A JPEG is decoded at 1/2..1/8 scale by its own decoder (`Image.draft`),
other formats are reduced right after decoding; the header's own size is kept in `DecodedImage.size`.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidInput, TooLarge

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})
# Modes `Image.thumbnail` shrinks well as they are; others (palette, 1-bit, 16-bit) become RGB first, since a
# palette image would otherwise be resized by nearest neighbour.
_RESIZABLE_MODES = frozenset({"RGB", "RGBA", "L", "LA", "CMYK", "YCbCr"})


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    max_side: int = 1024  # decoded pictures are at most this long on their longer side (0 = full size)
    fetch_timeout_s: float = 10.0  # longest download of one URL, redirects included
    max_fetches: int = 4  # URL downloads in progress at once, per ImageIntake


@dataclass(frozen=True, slots=True)
class DecodedImage:
    image: Image.Image  # RGB, at most `max_side` on its longer side
    raw: bytes  # what it was decoded from: ingest derives the image id from it, search logs it
    size: tuple[int, int]  # (width, height) of the encoded image itself, from its header


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), *, name: str = "image") -> DecodedImage:
    """Bytes -> RGB picture at most `limits.max_side` long, or InvalidInput / TooLarge saying what was expected."""
    if not data:
        raise InvalidInput(f"{name}: expected image bytes, got an empty payload")
    if len(data) > limits.max_bytes:
        raise TooLarge(f"{name}: expected at most {limits.max_bytes} bytes, got {len(data)}")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            image = Image.open(io.BytesIO(data))
            fmt = image.format
            width, height = image.size
            if fmt not in ALLOWED_FORMATS:
                raise InvalidInput(f"{name}: expected one of {sorted(ALLOWED_FORMATS)}, got format {fmt}")
            if width * height > limits.max_pixels:
                raise TooLarge(f"{name}: expected at most {limits.max_pixels} pixels, got {width}x{height}")
            if min(width, height) < limits.min_side:
                raise InvalidInput(f"{name}: expected both sides >= {limits.min_side} pixels, got {width}x{height}")
            image = _to_working_size(image, limits.max_side)
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(f"{name}: expected at most {limits.max_pixels} pixels ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{name}: expected an image ({', '.join(sorted(ALLOWED_FORMATS))}), "
                           "got bytes no decoder recognises") from None
    except (InvalidInput, TooLarge, MemoryError):
        raise
    except Exception as exc:  # the decoders raise many types (OSError, EOFError, struct.error, ...) on bad bytes
        raise InvalidInput(f"{name}: expected a complete, decodable image, decoding failed: {exc}") from None
    return DecodedImage(image if image.mode == "RGB" else image.convert("RGB"), data, (width, height))


def _to_working_size(image: Image.Image, max_side: int) -> Image.Image:
    """The decoded picture, at most `max_side` on its longer side (decoding it: a truncated file raises here)."""
    if not max_side or max(image.size) <= max_side:
        image.load()
        return image
    if image.mode not in _RESIZABLE_MODES:
        image = image.convert("RGB")
    # thumbnail() asks a JPEG decoder for a 1/2..1/8 scale first (draft), then shrinks what it decoded.
    image.thumbnail((max_side, max_side))
    return image
