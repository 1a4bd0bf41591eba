"""The one way a garment's box becomes the picture the model analyses, in evaluation and in serving alike."""

from __future__ import annotations

import math

from PIL import Image

from shared.errors import InvalidInput

FRAME_FILL = 0.85  # share of the crop's side the box's longer side takes, as in a shop photo (0.78-0.9)
# A shopper photo's garment box is framed like a shop photo too. Measured (docs/RESULTS.md, issue 13, 1200-item
# outfits, seeds 1 / 2, top-20 detected | ground-truth boxes): a context margin does not make retrieval less sensitive
# to a detected box's error, it costs (0.75: 0.732 / 0.728 | 0.867 / 0.866 against 0.85: 0.747 / 0.743 | 0.884 /
# 0.893), and a tight box gains on ground-truth boxes only (1.0: 0.750 / 0.732 | 0.901 / 0.900). The gap between
# detected and ground-truth boxes is garments with no detection over serving's threshold, not the framing.
QUERY_FILL = FRAME_FILL


def square_crop(image: Image.Image, box: tuple[float, float, float, float], *, fill: float = FRAME_FILL,
                background: tuple[int, int, int] = (128, 128, 128)) -> Image.Image:
    """A square around the box (pixels x1, y1, x2, y2), framed like a shop photo; outside the image is grey."""
    x1, y1, x2, y2 = box
    side = max(x2 - x1, y2 - y1, 1.0) / fill
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    left, top = round(cx - side / 2), round(cy - side / 2)
    size = max(1, round(side))
    canvas = Image.new("RGB", (size, size), background)
    region = image.convert("RGB").crop((left, top, left + size, top + size))
    inside = (max(0, -left), max(0, -top), min(size, image.width - left), min(size, image.height - top))
    if inside[2] > inside[0] and inside[3] > inside[1]:
        canvas.paste(region.crop(inside), inside[:2])
    return canvas


def garment_crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The picture a garment's box (pixels x1, y1, x2, y2) in a shopper photo becomes: what serving analyses for a
    detected garment or a requested region, and what `fashion eval --benchmark outfits` embeds as its query."""
    return square_crop(image, box, fill=QUERY_FILL)


def fraction_to_pixels(box: tuple[float, float, float, float], width: int, height: int) -> tuple[float, ...]:
    return (box[0] * width, box[1] * height, box[2] * width, box[3] * height)


def validate_box(box: tuple[float, float, float, float], *, name: str = "region") -> tuple[float, float, float, float]:
    """A box normalised to [0, 1] of the image, or InvalidInput saying what was expected and what was wrong."""
    x1, y1, x2, y2 = (float(v) for v in box)
    expected = f"expected {name} as fractions of the image with 0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        raise InvalidInput(f"{expected}, got non-finite coordinates {box}")
    if min(x1, y1, x2, y2) < 0.0 or max(x1, y1, x2, y2) > 1.0:
        raise InvalidInput(f"{expected}, got a box outside the image: ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
    if x1 > x2 or y1 > y2:
        raise InvalidInput(f"{expected}, got an inverted box: ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
    if x1 == x2 or y1 == y2:
        raise InvalidInput(f"{expected}, got a box of zero area: ({x1:g}, {y1:g}, {x2:g}, {y2:g})")
    return x1, y1, x2, y2
