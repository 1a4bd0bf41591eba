"""Browsing the catalogue: products a page at a time with their stored predictions, and thumbnails of their
images. Plain code over the database and the catalogue's image intake (no gRPC); `server.py` exposes it as
ListProducts and GetImage for the web console, which never opens a store itself."""

from __future__ import annotations

import io
from dataclasses import dataclass, field

from PIL import ImageOps
from sqlalchemy.orm import Session, sessionmaker

from shared.db import repository
from shared.errors import FashionError, InvalidInput, NotFound
from shared.imaging import ImageIntake, ImageSource

MAX_LIMIT = 200
DEFAULT_LIMIT = 24
DEFAULT_THUMB_PX = 320
MAX_THUMB_PX = 1024


@dataclass(frozen=True)
class StoredPrediction:
    """What the model predicted for an image when it was indexed (ImagePrediction's columns)."""

    category: str | None
    category_score: float | None
    attributes: dict[str, float]
    landmarks: list[dict]


@dataclass(frozen=True)
class CatalogImageInfo:
    image_id: str
    domain: str
    prediction: StoredPrediction | None = None


@dataclass(frozen=True)
class CatalogueProductInfo:
    product_id: str
    title: str
    brand: str | None
    price: float | None
    currency: str | None
    in_stock: bool
    category: str | None
    attributes: tuple[str, ...]
    images: tuple[CatalogImageInfo, ...] = field(default_factory=tuple)


@dataclass(frozen=True)
class CataloguePage:
    products: list[CatalogueProductInfo]
    total: int
    model_version: str


class CatalogueBrowser:
    """`intake`: the catalogue intake (files under the catalogue roots, allowed URLs), the one ingest reads with."""

    def __init__(self, sessions: sessionmaker[Session], intake: ImageIntake) -> None:
        self.sessions = sessions
        self.intake = intake

    def list_products(self, query: str = "", *, limit: int = 0, offset: int = 0) -> CataloguePage:
        if not 0 <= limit <= MAX_LIMIT:
            raise InvalidInput(f"expected a limit between 1 and {MAX_LIMIT} (0 = {DEFAULT_LIMIT}), got {limit}")
        if offset < 0:
            raise InvalidInput(f"expected an offset >= 0, got {offset}")
        with self.sessions() as session:
            products, total = repository.find_products(session, query, limit=limit or DEFAULT_LIMIT, offset=offset)
            serving = repository.serving_version(session)
            version = serving.version if serving is not None else ""
            images = repository.get_images_for_products(session, [p.product_id for p in products])
            stored = repository.predictions_for(session, [i.image_id for found in images.values() for i in found],
                                                version) if version else {}
            page = [CatalogueProductInfo(
                p.product_id, p.title, p.brand, float(p.price) if p.price is not None else None, p.currency,
                p.in_stock, p.category, tuple(p.attributes or ()),
                tuple(CatalogImageInfo(i.image_id, i.domain, _prediction(stored.get(i.image_id)))
                      for i in images.get(p.product_id, [])))
                for p in products]
        return CataloguePage(page, total, version)

    def thumbnail(self, image_id: str, max_px: int = 0) -> bytes:
        """The image as a JPEG no larger than `max_px` on its longest side, read through the catalogue intake."""
        if not 0 <= max_px <= MAX_THUMB_PX:
            raise InvalidInput(f"expected max_px between 1 and {MAX_THUMB_PX} (0 = {DEFAULT_THUMB_PX}), got {max_px}")
        if not image_id:
            raise InvalidInput("expected an image_id, got an empty one")
        with self.sessions() as session:
            uri = repository.get_image(session, image_id).uri
        if not uri:
            raise NotFound(f"image {image_id!r} has no stored location (it was sent inline)")
        try:
            image = self.intake.load(ImageSource(uri=uri), name=f"image {image_id}").image
        except FashionError as exc:
            raise NotFound(f"image {image_id!r} cannot be read any more: {exc}") from None
        side = max_px or DEFAULT_THUMB_PX
        buf = io.BytesIO()
        ImageOps.contain(image.convert("RGB"), (side, side)).save(buf, format="JPEG", quality=85)
        return buf.getvalue()


def _prediction(row) -> StoredPrediction | None:
    if row is None:
        return None
    return StoredPrediction(row.category, row.category_score, dict(row.attributes or {}), list(row.landmarks or []))
