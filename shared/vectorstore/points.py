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
from qdrant_client import models as qm

from shared.errors import InvalidInput

SERVING_ALIAS = "products"
COLLECTION_PREFIX = "products_"
MAX_TOP_K = 1000
_POINT_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://fashionnet.local/vectorstore/points")
_NAME_SAFE = re.compile(r"[^A-Za-z0-9_.-]")

# Payload fields the search filters use, with the index type the server should build for them.
PAYLOAD_INDEXES: dict[str, qm.PayloadSchemaType] = {
    "product_id": qm.PayloadSchemaType.KEYWORD,
    "image_id": qm.PayloadSchemaType.KEYWORD,
    "category": qm.PayloadSchemaType.KEYWORD,
    "attributes": qm.PayloadSchemaType.KEYWORD,  # an array of keywords; MatchValue matches any element
    "price": qm.PayloadSchemaType.FLOAT,
    "in_stock": qm.PayloadSchemaType.BOOL,
    "deleted": qm.PayloadSchemaType.BOOL,  # soft delete: points with deleted=true never come back from search
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


def build_filter(filters: SearchFilters | None, exclude_product_id: str | None = None) -> qm.Filter:
    """The Qdrant filter for `filters`; soft-deleted points are always excluded."""
    must: list[qm.Condition] = []
    must_not: list[qm.Condition] = [qm.FieldCondition(key="deleted", match=qm.MatchValue(value=True))]
    if filters is not None:
        if filters.categories:
            must.append(qm.FieldCondition(key="category", match=qm.MatchAny(any=list(filters.categories))))
        for attribute in dict.fromkeys(filters.attributes_all):
            must.append(qm.FieldCondition(key="attributes", match=qm.MatchValue(value=attribute)))
        if filters.min_price is not None or filters.max_price is not None:
            if (
                filters.min_price is not None
                and filters.max_price is not None
                and filters.min_price > filters.max_price
            ):
                raise InvalidInput(f"expected min_price <= max_price, got {filters.min_price} > {filters.max_price}")
            must.append(qm.FieldCondition(key="price", range=qm.Range(gte=filters.min_price, lte=filters.max_price)))
        if filters.in_stock_only:
            must.append(qm.FieldCondition(key="in_stock", match=qm.MatchValue(value=True)))
    if exclude_product_id is not None:
        must_not.append(qm.FieldCondition(key="product_id", match=qm.MatchValue(value=exclude_product_id)))
    return qm.Filter(must=must or None, must_not=must_not)


def payload_matches(payload: dict, filters: SearchFilters | None, exclude_product_id: str | None = None) -> bool:
    """The same predicate as `build_filter`, on one payload (local mode filters its candidates in Python)."""
    if payload.get("deleted") is True or (exclude_product_id is not None
                                          and payload.get("product_id") == exclude_product_id):
        return False
    if filters is None:
        return True
    if filters.categories and payload.get("category") not in filters.categories:
        return False
    if filters.attributes_all and not set(filters.attributes_all) <= set(payload.get("attributes") or ()):
        return False
    price = payload.get("price")
    if filters.min_price is not None and (price is None or price < filters.min_price):
        return False
    if filters.max_price is not None and (price is None or price > filters.max_price):
        return False
    return not (filters.in_stock_only and payload.get("in_stock") is not True)
