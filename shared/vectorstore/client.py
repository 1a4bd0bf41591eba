"""Opening the vector store: a Qdrant server by URL, Qdrant Edge in a folder (the local default), or
qdrant-client's in-memory server stand-in (tests)."""

from __future__ import annotations

from pathlib import Path

from shared.vectorstore.store import VectorStore


def open_store(location: str | Path, *, api_key: str | None = None, timeout_s: float = 10.0,
               quantize_int8: bool = False) -> VectorStore:
    """`http(s)://host:port` -> ServerStore; `:memory:` -> ServerStore on qdrant-client's in-memory mode;
    anything else -> EdgeStore in that folder, after migrating a store the previous local mode left there."""
    location = str(location)
    if location.startswith(("http://", "https://")) or location == ":memory:":
        from qdrant_client import QdrantClient

        from shared.vectorstore.qdrant import ServerStore

        if location == ":memory:":
            return ServerStore(QdrantClient(location=":memory:"))
        return ServerStore(QdrantClient(url=location, api_key=api_key, timeout=int(timeout_s)))
    from shared.vectorstore.edge import EdgeStore
    from shared.vectorstore.migrate import migrate_local_mode

    migrate_local_mode(Path(location))
    return EdgeStore(location, quantize_int8=quantize_int8)
