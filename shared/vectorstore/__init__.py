"""Vector store: product image embeddings in Qdrant, a collection per model version behind the `products` alias.

One contract (`VectorStore`), two engines: Qdrant Edge embedded in the process (`EdgeStore`, the local default)
and a Qdrant server through qdrant-client (`ServerStore`); `open_store` picks one from a location.
"""

from shared.vectorstore.client import open_store
from shared.vectorstore.points import (
    COLLECTION_PREFIX,
    MAX_TOP_K,
    PAYLOAD_INDEXES,
    SERVING_ALIAS,
    Hit,
    SearchFilters,
    VectorPoint,
    collection_name,
    point_id,
)
from shared.vectorstore.store import VectorStore

__all__ = [
    "COLLECTION_PREFIX",
    "MAX_TOP_K",
    "PAYLOAD_INDEXES",
    "SERVING_ALIAS",
    "Hit",
    "SearchFilters",
    "VectorPoint",
    "VectorStore",
    "collection_name",
    "open_store",
    "point_id",
]
