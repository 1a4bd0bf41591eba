"""Catalogue indexing, written once for ingest and re-indexing: a product's pictures -> analyses pinned to one
model version -> the product's points in that version's collection.

Ingest (services/ingest/core.py) reads uploaded pictures with `read_upload`, re-indexing (services/admin/
reindex.py) reads stored ones with `read_stored`; both analyse with `analyze_images` and build points with
`catalog_point`. So the two writers of a collection cannot disagree on image ids, the model that embedded a
picture, or what the payload says.
"""

from __future__ import annotations

import hashlib
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace

from PIL import Image

from shared.db.models import Image as ImageRow
from shared.db.models import Product
from shared.errors import InvalidInput, TooLarge
from shared.imaging import ImageIntake, ImageSource
from shared.serving.analyzer import Analyzer, analyze_pinned
from shared.serving.runtime import Analysis
from shared.vectorstore import VectorPoint
from shared.vectorstore.payload import ProductPayload

# The namespace is part of every stored image id: it keeps the name of the service that first derived them.
_IMAGE_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fashionnet.local/ingest/images")


def image_id_for(product_id: str, sha256_hex: str) -> str:
    """Deterministic image id: the same bytes under the same product are the same image, whatever the event."""
    return str(uuid.uuid5(_IMAGE_NAMESPACE, f"{product_id}\x1f{sha256_hex}"))


@dataclass
class CatalogImage:
    """One catalogue picture on its way into a collection; `analysis` is set by `analyze_images`."""

    product_id: str
    image_id: str
    uri: str | None  # where it can be read again; None for an inline upload
    picture: Image.Image  # decoded at the intake's working size (ImageLimits.max_side)
    size: tuple[int, int]  # (width, height) of the picture as uploaded, from its header
    sha256: str = ""  # of the bytes read (uploads only: a stored image keeps its stored id)
    analysis: Analysis | None = None


def read_upload(intake: ImageIntake, product_id: str, sources: Sequence[ImageSource], *,
                deadline: float | None = None) -> list[CatalogImage]:
    """A product's uploaded pictures, fetched and decoded, with ids from their content (the same picture twice is
    one image). The first bad picture raises its InvalidInput / TooLarge, saying which one it was."""
    images: list[CatalogImage] = []
    seen: set[str] = set()
    for k, source in enumerate(sources):
        label = f"image #{k}" + (f" ({source.id})" if source.id else "")
        try:
            loaded = intake.load(source, deadline=deadline)
        except TooLarge as exc:
            raise TooLarge(f"{label}: {exc}") from None
        except InvalidInput as exc:
            raise InvalidInput(f"{label}: {exc}") from None
        digest = hashlib.sha256(loaded.raw).hexdigest()
        image_id = image_id_for(product_id, digest)
        if image_id not in seen:
            seen.add(image_id)
            images.append(CatalogImage(product_id, image_id, source.uri, loaded.image, loaded.size, digest))
    return images


def read_stored(intake: ImageIntake, image: ImageRow) -> CatalogImage:
    """A stored catalogue image read again from its uri, under its stored id; InvalidInput / TooLarge when it
    cannot be (an inline upload has no uri; a file may have gone or changed)."""
    if not image.uri:
        raise InvalidInput("it has no stored uri (an inline upload)")
    loaded = intake.load(ImageSource(uri=image.uri))
    return CatalogImage(image.product_id, image.image_id, image.uri, loaded.image, loaded.size)


def analyze_images(analyzer: Analyzer, images: Sequence[CatalogImage], version: str, *,
                   timeout: float | None) -> None:
    """Analyse every image with exactly `version` in one call (see `analyze_pinned`), setting `analysis`."""
    analyses = analyze_pinned(analyzer, [im.picture for im in images], version, timeout=timeout)
    for image, analysis in zip(images, analyses, strict=True):
        image.analysis = analysis


def stored_payload(product: Product) -> ProductPayload:
    """The payload of a product as the database has it. Category and attributes are the product's stored labels:
    search filters on them in Qdrant and the product's row says the same."""
    return ProductPayload(title=product.title, category=product.category, attributes=tuple(product.attributes or ()),
                          price=float(product.price) if product.price is not None else None,
                          in_stock=product.in_stock, brand=product.brand, currency=product.currency)


def catalog_point(image: CatalogImage, product: ProductPayload) -> VectorPoint:
    """The point of one analysed image: its product's payload, with where this picture came from."""
    if image.analysis is None:
        raise RuntimeError(f"image {image.image_id} of product {image.product_id} was not analysed")
    return VectorPoint(image.product_id, image.image_id, image.analysis.embedding,
                       replace(product, image_uri=image.uri).to_dict())
