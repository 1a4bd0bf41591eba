"""Reading the catalogue as a person browses it (the web console's catalogue page): products by id prefix or
title, a page at a time, with their images and one model version's stored predictions."""

from __future__ import annotations

from collections.abc import Iterable

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Image, ImagePrediction, Product
from shared.db.repository._sql import chunks
from shared.errors import NotFound


def _matching(query: str) -> sa.ColumnElement[bool]:
    """Live products whose id starts with, or whose title contains, `query` (case-insensitive; LIKE's
    wildcards in the query are taken literally)."""
    live = Product.deleted.is_(False)
    text = query.strip().lower()
    if not text:
        return live
    escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return sa.and_(live, sa.or_(sa.func.lower(Product.product_id).like(f"{escaped}%", escape="\\"),
                                sa.func.lower(Product.title).like(f"%{escaped}%", escape="\\")))


def find_products(session: Session, query: str = "", *, limit: int = 24, offset: int = 0) -> tuple[list[Product], int]:
    """One page of matching products in product-id order, and how many match in all."""
    where = _matching(query)
    total = int(session.scalar(sa.select(sa.func.count()).select_from(Product).where(where)) or 0)
    stmt = sa.select(Product).where(where).order_by(Product.product_id).limit(limit).offset(offset)
    return list(session.scalars(stmt)), total


def predictions_for(session: Session, image_ids: Iterable[str], model_version: str) -> dict[str, ImagePrediction]:
    """The stored predictions of `model_version` per image id (images without one are absent)."""
    found: dict[str, ImagePrediction] = {}
    for batch in chunks(dict.fromkeys(image_ids)):
        stmt = sa.select(ImagePrediction).where(ImagePrediction.image_id.in_(batch),
                                                ImagePrediction.model_version == model_version)
        found.update((p.image_id, p) for p in session.scalars(stmt))
    return found


def get_image(session: Session, image_id: str) -> Image:
    image = session.get(Image, image_id)
    if image is None:
        raise NotFound(f"unknown image_id {image_id!r}: expected an image of an indexed product")
    return image
