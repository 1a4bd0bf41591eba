"""Products, their images and what each model version predicted for them."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import sqlalchemy as sa
from sqlalchemy.orm import Session

from shared.db.models import Image, ImageDomain, ImagePrediction, Product, utcnow
from shared.db.repository._sql import chunks, field, insert_rows
from shared.errors import InvalidInput, NotFound


def _require_id(name: str, value: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise InvalidInput(f"expected a non-empty {name}, got {value!r}")
    return value


def _price(value: Decimal | float | int | str | None) -> Decimal | None:
    if value is None:
        return None
    try:
        price = Decimal(str(value))
    except InvalidOperation:
        raise InvalidInput(f"expected a decimal price, got {value!r}") from None
    if not price.is_finite() or price < 0:
        raise InvalidInput(f"expected a price >= 0, got {value!r}")
    return price


def _currency(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) != 3 or not value.isalpha():
        raise InvalidInput(f"expected a 3-letter ISO 4217 currency code such as 'EUR', got {value!r}")
    return value.upper()


def upsert_product(
    session: Session,
    product_id: str,
    *,
    title: str,
    brand: str | None = None,
    price: Decimal | float | str | None = None,
    currency: str | None = None,
    in_stock: bool = True,
    category: str | None = None,
    attributes: Sequence[str] | None = None,
) -> None:
    """Insert or update a product by its natural key; an upsert of a deleted product lists it again.

    The event's own fields (title, brand, price, currency, stock) always overwrite. The predicted
    ``category`` and ``attributes`` overwrite only when given, so a metadata-only update keeps them.
    """
    upsert_products(session, [{"product_id": product_id, "title": title, "brand": brand, "price": price,
                               "currency": currency, "in_stock": in_stock, "category": category,
                               "attributes": attributes}])


def upsert_products(session: Session, products: Sequence[Mapping[str, Any]]) -> None:
    """`upsert_product` for many products (mappings of its keyword arguments plus ``product_id``), in one
    statement per kind of update (the ingest hot path: one for a whole chunk). Each product id at most once.

    A mapping may also carry ``event_occurred_at``, the time of the event it comes from (see `lock_products`);
    without one, the product keeps the time it had.
    """
    kinds: dict[tuple[bool, bool], list[dict[str, Any]]] = {}
    seen: set[str] = set()
    for product in products:
        product_id = _require_id("product_id", product["product_id"])
        if product_id in seen:
            raise InvalidInput(f"product_id {product_id!r} twice in one upsert: expected each product once")
        seen.add(product_id)
        category, attributes = product.get("category"), product.get("attributes")
        row = {"product_id": product_id, "title": product["title"], "brand": product.get("brand"),
               "price": _price(product.get("price")), "currency": _currency(product.get("currency")),
               "in_stock": bool(product.get("in_stock", True)), "category": category,
               "attributes": list(attributes or []), "deleted": False, "deleted_at": None,
               "event_occurred_at": product.get("event_occurred_at")}
        kinds.setdefault((category is not None, attributes is not None), []).append(row)
    products_table = Product.__table__
    for (has_category, has_attributes), rows in kinds.items():
        stmt = insert_rows(session, Product)
        keep = {"product_id"} | ({"category"} if not has_category else set()) | (
            {"attributes"} if not has_attributes else set())
        update = {name: stmt.excluded[name] for name in rows[0] if name not in keep}
        update["event_occurred_at"] = sa.func.coalesce(stmt.excluded.event_occurred_at,
                                                       products_table.c.event_occurred_at)
        update["updated_at"] = utcnow()
        session.execute(stmt.on_conflict_do_update(index_elements=[products_table.c.product_id], set_=update), rows)


def lock_products(session: Session, product_ids: Iterable[str]) -> dict[str, datetime | None]:
    """Lock the rows of ``product_ids`` until the transaction ends; returns each one's ``event_occurred_at``
    (the time of the newest event applied to it, None when none said).

    The ingest worker decides whether an event is older than what its product shows, then writes Qdrant and the
    database, all under this lock, so two workers applying one product's events (on two partitions) take turns.
    A product without a row gets one first, deleted and untitled, to have something to lock: an upsert in the
    same transaction fills it in; after a delete it stays, a tombstone remembering when the product was deleted,
    so that an upsert from before the delete, arriving after it, cannot list the product again. Rows are
    created and locked in product-id order, the same for every writer, so two chunks cannot deadlock.
    """
    ids = sorted(set(product_ids))
    if not ids:
        return {}
    now = utcnow()
    session.execute(insert_rows(session, Product).on_conflict_do_nothing(),
                    [{"product_id": _require_id("product_id", pid), "title": "", "attributes": [], "deleted": True,
                      "deleted_at": now} for pid in ids])
    applied: dict[str, datetime | None] = {}
    for batch in chunks(ids):
        stmt = (sa.select(Product.product_id, Product.event_occurred_at).where(Product.product_id.in_(batch))
                .order_by(Product.product_id).with_for_update())
        applied.update((pid, at) for pid, at in session.execute(stmt))
    return applied


def mark_product_deleted(session: Session, product_id: str, *, occurred_at: datetime | None = None) -> bool:
    """Soft-delete: True when a live product was marked, False when unknown or already deleted (replays).

    ``occurred_at``: the delete event's time, kept on the row (a tombstone too) like an upsert's.
    """
    if occurred_at is not None:
        session.execute(sa.update(Product).where(Product.product_id == product_id)
                        .values(event_occurred_at=occurred_at).execution_options(synchronize_session=False))
    now = utcnow()
    result = session.execute(
        sa.update(Product)
        .where(Product.product_id == product_id, Product.deleted.is_(False))
        .values(deleted=True, deleted_at=now, updated_at=now)
        .execution_options(synchronize_session=False))
    return result.rowcount > 0


def get_product(session: Session, product_id: str, *, include_deleted: bool = False) -> Product:
    product = get_products(session, [product_id], include_deleted=include_deleted).get(product_id)
    if product is None:
        raise NotFound(f"unknown product_id {product_id!r}: expected the id of a catalogue product")
    return product


def get_products(session: Session, product_ids: Iterable[str], *, include_deleted: bool = False) -> dict[str, Product]:
    """Products by id (missing and, by default, deleted ones are left out), for enriching search hits."""
    found: dict[str, Product] = {}
    for batch in chunks(dict.fromkeys(product_ids)):
        stmt = sa.select(Product).where(Product.product_id.in_(batch))
        if not include_deleted:
            stmt = stmt.where(Product.deleted.is_(False))
        for product in session.scalars(stmt.execution_options(populate_existing=True)):
            found[product.product_id] = product
    return found


def upsert_image(
    session: Session,
    image_id: str,
    product_id: str,
    *,
    uri: str | None = None,
    sha256: str | None = None,
    width: int | None = None,
    height: int | None = None,
    domain: str = ImageDomain.SHOP,
) -> None:
    """Insert or update an image by its deterministic id; its product must exist (upsert that first)."""
    upsert_images(session, product_id, [{"image_id": image_id, "uri": uri, "sha256": sha256, "width": width,
                                         "height": height, "domain": domain}])


def upsert_images(session: Session, product_id: str, images: Sequence[Mapping[str, Any]]) -> None:
    """`upsert_image` for several images of one product in one statement.

    Each mapping has ``image_id`` and optionally ``uri``, ``sha256``, ``width``, ``height``, ``domain``.
    """
    upsert_images_many(session, [{**image, "product_id": product_id} for image in images])


def upsert_images_many(session: Session, images: Sequence[Mapping[str, Any]]) -> None:
    """`upsert_images` across products (each mapping also names its ``product_id``): one existence check and
    one upsert for a whole ingest chunk. Every product must exist (upsert those first)."""
    if not images:
        return
    rows = []
    for image in images:
        domain = str(image.get("domain", ImageDomain.SHOP))
        if domain not in {d.value for d in ImageDomain}:
            raise InvalidInput(f"expected image domain 'shop' or 'consumer', got {domain!r}")
        rows.append({"image_id": _require_id("image_id", image["image_id"]),
                     "product_id": _require_id("product_id", image["product_id"]),
                     "uri": image.get("uri"), "sha256": image.get("sha256"), "width": image.get("width"),
                     "height": image.get("height"), "domain": domain})
    wanted = list(dict.fromkeys(row["product_id"] for row in rows))
    known = {pid for batch in chunks(wanted)
             for pid in session.scalars(sa.select(Product.product_id).where(Product.product_id.in_(batch)))}
    missing = next((row for row in rows if row["product_id"] not in known), None)
    if missing is not None:
        raise NotFound(f"unknown product_id {missing['product_id']!r} for image {missing['image_id']!r}: "
                       "upsert the product first")
    stmt = insert_rows(session, Image)
    update = {name: stmt.excluded[name] for name in rows[0] if name != "image_id"}
    session.execute(stmt.on_conflict_do_update(index_elements=[Image.__table__.c.image_id], set_=update), rows)


def delete_images_except(session: Session, keep: Mapping[str, Iterable[str]]) -> None:
    """For each product in ``keep``, delete its images whose id is not listed (a re-upload's dropped pictures;
    their predictions cascade). One statement for all of them: image ids are unique across products."""
    if not keep:
        return
    kept = [image_id for ids in keep.values() for image_id in ids]
    stmt = sa.delete(Image).where(Image.product_id.in_(list(keep)))
    if kept:
        stmt = stmt.where(Image.image_id.not_in(kept))
    session.execute(stmt.execution_options(synchronize_session=False))


def get_product_images(session: Session, product_id: str, *, domain: str | None = None) -> list[Image]:
    return get_images_for_products(session, [product_id], domain=domain).get(product_id, [])


def get_images_for_products(session: Session, product_ids: Iterable[str], *,
                            domain: str | None = None) -> dict[str, list[Image]]:
    """Images per product id, ordered by image id; products without images are absent."""
    found: dict[str, list[Image]] = {}
    for batch in chunks(dict.fromkeys(product_ids)):
        stmt = sa.select(Image).where(Image.product_id.in_(batch)).order_by(Image.product_id, Image.image_id)
        if domain is not None:
            stmt = stmt.where(Image.domain == str(domain))
        for image in session.scalars(stmt.execution_options(populate_existing=True)):
            found.setdefault(image.product_id, []).append(image)
    return found


def catalog_images_page(session: Session, *, after_image_id: str | None = None, limit: int = 500,
                        domain: str | None = ImageDomain.SHOP) -> list[Image]:
    """One page of live products' images in image-id order (keyset paging: resumable re-indexing)."""
    stmt = (sa.select(Image).join(Product, Product.product_id == Image.product_id)
            .where(Product.deleted.is_(False)).order_by(Image.image_id).limit(limit))
    if after_image_id is not None:
        stmt = stmt.where(Image.image_id > after_image_id)
    if domain is not None:
        stmt = stmt.where(Image.domain == str(domain))
    return list(session.scalars(stmt))


def count_catalog_images(session: Session, *, domain: str | None = ImageDomain.SHOP,
                         through_image_id: str | None = None) -> int:
    """Live products' images; with `through_image_id`, only those up to it in image-id order (the pages a
    resumed re-index has done)."""
    stmt = (sa.select(sa.func.count()).select_from(Image).join(Product, Product.product_id == Image.product_id)
            .where(Product.deleted.is_(False)))
    if domain is not None:
        stmt = stmt.where(Image.domain == str(domain))
    if through_image_id is not None:
        stmt = stmt.where(Image.image_id <= through_image_id)
    return int(session.scalar(stmt) or 0)


def products_changed_since(session: Session, since: datetime, *, after: str | None = None,
                           limit: int = 256) -> list[Product]:
    """Products (deleted ones too) updated at or after `since`, in product-id order, keyset-paged after `after`."""
    stmt = sa.select(Product).where(Product.updated_at >= since).order_by(Product.product_id).limit(limit)
    if after is not None:
        stmt = stmt.where(Product.product_id > after)
    return list(session.scalars(stmt.execution_options(populate_existing=True)))


def _finite(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise InvalidInput(f"expected a number for {name}, got {value!r}") from None
    if not math.isfinite(number):
        raise InvalidInput(f"expected a finite number for {name}, got {value!r}")
    return number


def _attribute_scores(attributes: Mapping[str, float] | Iterable[Any] | None) -> dict[str, float]:
    if attributes is None:
        return {}
    if isinstance(attributes, Mapping):
        return {str(name): _finite(f"attribute {name!r}", score) for name, score in attributes.items()}
    scores: dict[str, float] = {}
    for item in attributes:
        name, score = (item if isinstance(item, tuple) else (field(item, "name"), field(item, "score")))
        scores[str(name)] = _finite(f"attribute {name!r}", score)
    return scores


def _landmarks(landmarks: Iterable[Any] | None) -> list[dict[str, Any]]:
    out = []
    for item in landmarks or []:
        name = str(field(item, "name"))
        out.append({"name": name, "x": _finite(f"landmark {name!r} x", field(item, "x")),
                    "y": _finite(f"landmark {name!r} y", field(item, "y")),
                    "visibility": _finite(f"landmark {name!r} visibility", field(item, "visibility"))})
    return out


def save_predictions(
    session: Session,
    image_id: str,
    model_version: str,
    category: str | None,
    category_score: float | None,
    attributes: Mapping[str, float] | Iterable[Any] | None,
    landmarks: Iterable[Any] | None,
) -> None:
    """Store one model version's analysis of an image, replacing an earlier one (idempotent on replays).

    ``attributes``: ``{name: score}``, ``(name, score)`` pairs or objects with ``name``/``score``.
    ``landmarks``: mappings or objects (dataclasses, protobuf messages) with ``name``, ``x``, ``y``,
    ``visibility``.
    """
    save_predictions_many(session, model_version, [{"image_id": image_id, "category": category,
                                                     "category_score": category_score, "attributes": attributes,
                                                     "landmarks": landmarks}])


def save_predictions_many(session: Session, model_version: str, predictions: Sequence[Mapping[str, Any]]) -> None:
    """`save_predictions` for several images in one statement (the ingest hot path); same keys per mapping."""
    _require_id("model_version", model_version)
    if not predictions:
        return
    ids = [p["image_id"] for p in predictions]
    known = set(session.scalars(sa.select(Image.image_id).where(Image.image_id.in_(ids))))
    missing = [i for i in ids if i not in known]
    if missing:
        raise NotFound(f"unknown image_id {missing[0]!r}: upsert the image before its predictions")
    rows = [{"image_id": p["image_id"], "model_version": model_version, "category": p.get("category"),
             "category_score": None if p.get("category_score") is None
             else _finite("category_score", p["category_score"]),
             "attributes": _attribute_scores(p.get("attributes")), "landmarks": _landmarks(p.get("landmarks"))}
            for p in predictions]
    stmt = insert_rows(session, ImagePrediction)
    update = {name: stmt.excluded[name] for name in ("category", "category_score", "attributes", "landmarks")}
    update["updated_at"] = utcnow()
    table = ImagePrediction.__table__
    session.execute(stmt.on_conflict_do_update(index_elements=[table.c.image_id, table.c.model_version],
                                               set_=update), rows)


def get_predictions(session: Session, image_id: str, model_version: str) -> ImagePrediction | None:
    stmt = (sa.select(ImagePrediction)
            .where(ImagePrediction.image_id == image_id, ImagePrediction.model_version == model_version)
            .execution_options(populate_existing=True))
    return session.scalar(stmt)
