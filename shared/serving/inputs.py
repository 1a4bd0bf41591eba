"""Request images (fashion.v1.ImageInput) into decoded pictures, one error per bad image, never per batch.

`image_source` is the one conversion from the wire message to the intake's `ImageSource`: the model services,
search and ingest's event parser all use it, then `ImageIntake.load` does the reading and decoding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from PIL import Image

from fashion.v1 import common_pb2
from shared.errors import FashionError, InvalidInput, TooLarge
from shared.imaging import ImageIntake, ImageSource


def image_source(message: common_pb2.ImageInput) -> ImageSource:
    """The message's oneof as an `ImageSource` (neither set stays neither: `load` reports it, naming the image)."""
    kind = message.WhichOneof("source")
    return ImageSource(data=bytes(message.data) if kind == "data" else None,
                       uri=message.uri if kind == "uri" else None, id=message.id)


@dataclass(frozen=True)
class ResolvedImage:
    id: str
    image: Image.Image | None
    error: str = ""


def resolve_images(sources: Sequence[ImageSource], intake: ImageIntake, *, max_images: int,
                   deadline: float | None = None) -> list[ResolvedImage]:
    """Every source loaded (within the caller's `deadline`); a bad one gets its error, the others still load."""
    if not sources:
        raise InvalidInput("expected at least one image in the request, got an empty batch")
    if len(sources) > max_images:
        raise TooLarge(f"expected at most {max_images} images per request, got {len(sources)}")
    resolved = []
    for index, source in enumerate(sources):
        image_id = source.id or f"#{index}"
        try:
            image = intake.load(source, deadline=deadline, name=f"image {image_id}").image
        except FashionError as exc:
            resolved.append(ResolvedImage(image_id, None, error=str(exc)))
        else:
            resolved.append(ResolvedImage(image_id, image))
    return resolved
