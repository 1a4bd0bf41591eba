"""Moving a store written by the previous local default (qdrant-client's local mode) to Qdrant Edge.

Local mode left `meta.json` and `collection/<name>/storage.sqlite` in the store's folder. On open, its points
(vectors and payloads as stored, so no model is needed) are copied into a new Edge store beside it, the serving
alias is carried over, and the folders are swapped: the old one is kept as `<folder>.local-mode` until an
operator deletes it. Each step can be redone after a crash: the new store is built in `<folder>.migrating`,
and only two renames at the end make it the store.
"""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from shared.vectorstore.points import COLLECTION_PREFIX, SERVING_ALIAS, VectorPoint

log = logging.getLogger(__name__)


def is_local_mode_store(path: Path) -> bool:
    return (path / "meta.json").is_file()


def migrate_local_mode(path: Path, *, page: int = 1024) -> bool:
    """Migrate `path` if the previous local mode wrote it (or finish an interrupted migration); True if it did."""
    building, backup = path.with_name(f"{path.name}.migrating"), path.with_name(f"{path.name}.local-mode")
    if not path.exists() and building.exists() and backup.exists():
        building.rename(path)  # a crash came between the two final renames
        return True
    if not is_local_mode_store(path):
        return False
    if backup.exists():
        raise RuntimeError(f"cannot migrate the local-mode vector store {path}: {backup} exists; expected it moved "
                           "away (it is the backup of an earlier migration)")
    log.warning("the vector store in %s was written by qdrant-client's local mode, which the local default no "
                "longer uses: copying it into Qdrant Edge (the old folder stays as %s)", path, backup)
    shutil.rmtree(building, ignore_errors=True)
    _copy(path, building, page)
    path.rename(backup)
    building.rename(path)
    log.warning("vector store migrated to Qdrant Edge in %s; `fashion reindex` rebuilds a version from Postgres "
                "if anything looks missing", path)
    return True


def _copy(source: Path, target: Path, page: int) -> None:
    from qdrant_client import QdrantClient

    from shared.vectorstore.edge import EdgeStore

    client = QdrantClient(path=str(source))
    store = EdgeStore(target)
    try:
        serving = next((a.collection_name for a in client.get_aliases().aliases if a.alias_name == SERVING_ALIAS),
                       None)
        for description in client.get_collections().collections:
            name = description.name
            if not name.startswith(COLLECTION_PREFIX):
                continue
            config = client.get_collection(name).config
            version = str((config.metadata or {}).get("model_version") or name.removeprefix(COLLECTION_PREFIX))
            store.ensure_collection(version, int(config.params.vectors.size))  # type: ignore[union-attr]
            offset = None
            while True:
                records, offset = client.scroll(name, limit=page, offset=offset, with_payload=True,
                                                with_vectors=True)
                store.upsert(version, [VectorPoint(str(r.payload["product_id"]), str(r.payload["image_id"]),
                                                   r.vector, r.payload)  # type: ignore[arg-type, index]
                                       for r in records if r.payload])
                if offset is None:
                    break
            store.optimize(version)
            log.info("migrated %s: %d points", name, store.count(version))
            if name == serving:
                store.set_alias(version)
    finally:
        store.close()
        client.close()
