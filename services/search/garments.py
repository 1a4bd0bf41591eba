"""Per-garment search: each detected garment's crop analysed (in one batch) and searched on its own.

Plain logic for `SearchCore` (no gRPC). A garment searches within its own clothes type unless the request names
categories: an upper-body garment never returns trousers unless they were asked for.
"""

from __future__ import annotations

import dataclasses
import io
from dataclasses import dataclass

from PIL import Image

from shared.detection.crop import fraction_to_pixels, garment_crop
from shared.detection.decode import Detection
from shared.fashionnet.checkpoint import ModelMetadata
from shared.serving.runtime import Analysis
from shared.vectorstore import SearchFilters
from shared.vocabulary import GARMENT_CLASS_TYPE


@dataclass(frozen=True, slots=True)
class GarmentSearch:
    garment: Detection
    analysis: Analysis
    hits: list  # list[SearchHit] (services.search.core), best first
    query_id: str


def garment_filters(filters: SearchFilters, garment_class: str, metadata: ModelMetadata | None) -> SearchFilters:
    """The request's filters, with categories narrowed to the garment's clothes type when none were asked for."""
    if filters.categories or metadata is None:
        return filters
    wanted = GARMENT_CLASS_TYPE[garment_class]
    names = tuple(c.name for c in metadata.categories if c.clothes_type == wanted)
    return dataclasses.replace(filters, categories=names) if names else filters


def crop(image: Image.Image, box: tuple[float, float, float, float]) -> Image.Image:
    """The region (fractions of the image) as a garment crop, exactly as evaluation crops it."""
    return garment_crop(image, fraction_to_pixels(box, image.width, image.height))  # type: ignore[arg-type]


def jpeg(image: Image.Image) -> bytes:
    """The crop as the query log keeps it (retraining pairs it with the product the shopper clicked)."""
    buffer = io.BytesIO()
    image.convert("RGB").save(buffer, "JPEG", quality=90)
    return buffer.getvalue()
