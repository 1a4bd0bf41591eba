"""What the vector store stores and how it is asked: points, filters, hits, and the names of collections and
points (deterministic, so a replay or re-index upserts instead of duplicating)."""

from __future__ import annotations

import hashlib
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from shared.errors import InvalidInput

SERVING_ALIAS = "products"
COLLECTION_PREFIX = "products_"
MAX_TOP_K = 1000
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fashionnet.local/vectorstore/points")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

# Payload fields search, replace and delete filter on, with the index type each engine builds for them.
PAYLOAD_INDEXES: dict[str, str] = {
    "product_id": "keyword",
    "image_id": "keyword",
    "category": "keyword",
    "attributes": "keyword",  # an array of keywords; a "value" condition matches any element
    "price": "float",
    "in_stock": "bool",
    "deleted": "bool",  # soft delete: points with deleted=true never come back from search
}


@dataclass(frozen=True, slots=True)
class VectorPoint:
    """One catalogue image's embedding. `payload` carries category, attributes, price, in_stock, ..."""

    product_id: str
    image_id: str
    vector: Sequence[float] | np.ndarray
    payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SearchFilters:
    """Storefront filters; empty/None fields do not filter. `attributes_all`: every one must be present."""

    categories: Sequence[str] = ()
    attributes_all: Sequence[str] = ()
    min_price: float | None = None
    max_price: float | None = None
    in_stock_only: bool = False


@dataclass(frozen=True, slots=True)
class Hit:
    """One product in a result list, represented by its best-scoring image."""

    product_id: str
    image_id: str
    score: float
    payload: dict[str, Any]


def collection_name(model_version: str) -> str:
    """`products_<version>`; characters Qdrant or URLs dislike become `_`, plus a short hash so names stay unique."""
    if not model_version or not model_version.strip():
        raise InvalidInput("expected a non-empty model version")
    safe = _NAME_SAFE.sub("_", model_version)
    if safe != model_version:
        safe = f"{safe}_{hashlib.sha1(model_version.encode()).hexdigest()[:8]}"
    return f"{COLLECTION_PREFIX}{safe}"


def point_id(product_id: str, image_id: str, model_version: str) -> str:
    """Deterministic point id (uuid5), so re-indexing the same image upserts instead of duplicating."""
    return str(uuid.uuid5(_POINT_NAMESPACE, f"{model_version}\x1f{product_id}\x1f{image_id}"))


@dataclass(frozen=True, slots=True)
class Condition:
    """One engine-neutral filter condition; each engine translates these into its own filter types.

    `kind` is "any" (the field equals one of `value`), "value" (equals `value`; on an array field, any element
    does) or "range" (`value` = (gte, lte), either None).
    """

    kind: str
    key: str
    value: Any


def filter_conditions(filters: SearchFilters | None,
                      exclude_product_ids: Sequence[str] = ()) -> tuple[list[Condition], list[Condition]]:
    """(must, must_not) for `filters`; soft-deleted points are always excluded."""
    must: list[Condition] = []
    must_not = [Condition("value", "deleted", True)]
    if filters is not None:
        if filters.categories:
            must.append(Condition("any", "category", list(filters.categories)))
        must.extend(Condition("value", "attributes", a) for a in dict.fromkeys(filters.attributes_all))
        if filters.min_price is not None or filters.max_price is not None:
            low, high = filters.min_price, filters.max_price
            if low is not None and high is not None and low > high:
                raise InvalidInput(f"expected min_price <= max_price, got {filters.min_price} > {filters.max_price}")
            must.append(Condition("range", "price", (filters.min_price, filters.max_price)))
        if filters.in_stock_only:
            must.append(Condition("value", "in_stock", True))
    if exclude_product_ids:
        must_not.append(Condition("any", "product_id", list(exclude_product_ids)))
    return must, must_not
