"""Safe image decoding: never trust a payload's size, type or pixel count.

Every image that enters the system (catalogue uploads, shopper photos) passes through `decode_image`, by way
of `ImageIntake.load` (intake.py). It checks the byte size before decoding, the format against an allow-list,
the pixel count from the header before any pixel is decompressed (decompression bombs), and then decodes fully
so truncated files fail here with a clear message instead of deep inside the model.
"""

from __future__ import annotations

import io
import warnings
from dataclasses import dataclass

from PIL import Image, UnidentifiedImageError

from shared.errors import InvalidInput, TooLarge

ALLOWED_FORMATS = frozenset({"JPEG", "PNG", "WEBP", "BMP", "GIF", "TIFF"})


@dataclass(frozen=True)
class ImageLimits:
    max_bytes: int = 10 * 1024 * 1024
    max_pixels: int = 40_000_000
    min_side: int = 16
    fetch_timeout_s: float = 10.0


def decode_image(data: bytes, limits: ImageLimits = ImageLimits(), *, name: str = "image") -> Image.Image:
    """Bytes -> RGB PIL image, or InvalidInput / TooLarge saying what was expected."""
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
            image.load()
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise TooLarge(f"{name}: expected at most {limits.max_pixels} pixels ({exc})") from None
    except UnidentifiedImageError:
        raise InvalidInput(f"{name}: expected an image ({', '.join(sorted(ALLOWED_FORMATS))}), "
                           "got bytes no decoder recognises") from None
    except (OSError, SyntaxError, ValueError) as exc:
        raise InvalidInput(f"{name}: expected a complete, decodable image, decoding failed: {exc}") from None
    return image.convert("RGB")
