"""Turning request images (bytes or URI) into decoded pictures, one error per bad image, never per batch."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from shared.errors import FashionError, InvalidInput
from shared.imaging import ImageLimits, decode_image, read_uri


@dataclass(frozen=True)
class ResolvedImage:
    id: str
    image: Image.Image | None
    error: str = ""
    raw: bytes = b""


def resolve_image(source: object, limits: ImageLimits, index: int = 0) -> ResolvedImage:
    """`source` is a fashion.v1.ImageInput (or anything with data/uri/id and WhichOneof)."""
    image_id = getattr(source, "id", "") or f"#{index}"
    try:
        kind = source.WhichOneof("source")  # type: ignore[attr-defined]
        if kind == "data":
            raw = bytes(source.data)  # type: ignore[attr-defined]
        elif kind == "uri":
            raw = read_uri(source.uri, limits)  # type: ignore[attr-defined]
        else:
            raise InvalidInput(f"image {image_id}: expected `data` (bytes) or `uri`, got neither")
        return ResolvedImage(image_id, decode_image(raw, limits, name=f"image {image_id}"), raw=raw)
    except FashionError as exc:
        return ResolvedImage(image_id, None, error=str(exc))


def resolve_images(sources: Sequence[object], limits: ImageLimits, *, max_images: int) -> list[ResolvedImage]:
    if not sources:
        raise InvalidInput("expected at least one image in the request, got an empty batch")
    if len(sources) > max_images:
        from shared.errors import TooLarge

        raise TooLarge(f"expected at most {max_images} images per request, got {len(sources)}")
    return [resolve_image(s, limits, i) for i, s in enumerate(sources)]
