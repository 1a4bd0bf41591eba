"""Vector store: product image embeddings in Qdrant, a collection per model version behind the `products` alias."""

from shared.vectorstore.client import is_local, open_client
from shared.vectorstore.points import (
    COLLECTION_PREFIX,
    MAX_TOP_K,
    PAYLOAD_INDEXES,
    SERVING_ALIAS,
    Hit,
    SearchFilters,
    VectorPoint,
    build_filter,
    collection_name,
    point_id,
)
from shared.vectorstore.qdrant import VectorStore

__all__ = [
    "COLLECTION_PREFIX",
    "MAX_TOP_K",
    "PAYLOAD_INDEXES",
    "SERVING_ALIAS",
    "Hit",
    "SearchFilters",
    "VectorPoint",
    "VectorStore",
    "build_filter",
    "collection_name",
    "is_local",
    "open_client",
    "point_id",
]
