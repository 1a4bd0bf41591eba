"""The server engine: a Qdrant server (docker-compose / k8s) through qdrant-client.

Aliases, grouping by product (`query_points_groups`), payload indexes and filtered search are the server's own.
qdrant-client's in-memory mode (`":memory:"`) speaks the same API and stands in for a server in tests; it is
not thread-safe (plain dicts and numpy arrays), so calls on it are serialised, while a real server client is
used concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import warnings
from collections.abc import Iterator
from typing import Any

from qdrant_client import QdrantClient
from qdrant_client import models as qm

from shared.vectorstore.points import COLLECTION_PREFIX, PAYLOAD_INDEXES, SERVING_ALIAS, Condition, Hit
from shared.vectorstore.store import Row, VectorStore, hit_from

log = logging.getLogger(__name__)

_SCHEMAS = {"keyword": qm.PayloadSchemaType.KEYWORD, "float": qm.PayloadSchemaType.FLOAT,
            "bool": qm.PayloadSchemaType.BOOL}
# As on Edge (edge.py, measured there): storefronts filter by category pages and price caps.
_FIELD_SCHEMAS = {"category": qm.KeywordIndexParams(type=qm.KeywordIndexType.KEYWORD, is_tenant=True),
                  "price": qm.FloatIndexParams(type=qm.FloatIndexType.FLOAT, is_principal=True)}


def _condition(c: Condition) -> qm.FieldCondition:
    if c.kind == "any":
        return qm.FieldCondition(key=c.key, match=qm.MatchAny(any=list(c.value)))
    if c.kind == "range":
        return qm.FieldCondition(key=c.key, range=qm.Range(gte=c.value[0], lte=c.value[1]))
    return qm.FieldCondition(key=c.key, match=qm.MatchValue(value=c.value))


def server_filter(must: list[Condition], must_not: list[Condition]) -> qm.Filter:
    return qm.Filter(must=[_condition(c) for c in must] or None,
                     must_not=[_condition(c) for c in must_not] or None)


def _is_in_process(client: QdrantClient) -> bool:
    from qdrant_client.local.qdrant_local import QdrantLocal

    return isinstance(getattr(client, "_client", None), QdrantLocal)


class ServerStore(VectorStore):
    """The contract on a Qdrant server (or qdrant-client's in-memory stand-in). Takes a ready client."""

    def __init__(self, client: QdrantClient, *, alias: str = SERVING_ALIAS) -> None:
        super().__init__(alias=alias)
        self.client = client
        self._lock: threading.RLock | None = threading.RLock() if _is_in_process(client) else None
        self._dims: dict[str, int] = {}
        self._versions: dict[str, str] = {}  # collection name -> model version (never changes for a name)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    _writing = _reading

    def close(self) -> None:
        self.client.close()

    # -- collections -------------------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        return self.client.collection_exists(name)

    def _create(self, name: str, model_version: str, dim: int) -> None:
        try:
            self.client.create_collection(name, vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.DOT),
                                          metadata={"model_version": model_version, "dim": dim})
        except Exception:
            # A concurrent creator (another replica) won the race: fine if it is there now.
            if not self.client.collection_exists(name):
                raise
        with warnings.catch_warnings():  # the in-memory stand-in warns that it ignores them; a server builds them
            warnings.filterwarnings("ignore", message="Payload indexes have no effect")
            for field_name, kind in PAYLOAD_INDEXES.items():
                self.client.create_payload_index(name, field_name=field_name,
                                                 field_schema=_FIELD_SCHEMAS.get(field_name, _SCHEMAS[kind]),
                                                 wait=True)
        self._dims[name] = dim
        log.info("created collection %s (dim %d) for model %s", name, dim, model_version)

    def _drop(self, name: str) -> None:
        self.client.delete_collection(name)
        self._dims.pop(name, None)

    def _names(self) -> list[str]:
        return [c.name for c in self.client.get_collections().collections if c.name.startswith(COLLECTION_PREFIX)]

    def _dim(self, name: str) -> int:
        if name == self.serving_alias:  # the alias moves: never cache what it points at
            name = self._alias_collection() or name
        if name not in self._dims:
            params = self.client.get_collection(name).config.params.vectors
            assert isinstance(params, qm.VectorParams)
            self._dims[name] = params.size
        return self._dims[name]

    def _version_of(self, name: str) -> str:
        if name not in self._versions:
            metadata = self.client.get_collection(name).config.metadata or {}
            version = metadata.get("model_version")
            self._versions[name] = str(version) if version else name.removeprefix(COLLECTION_PREFIX)
        return self._versions[name]

    def _count(self, name: str) -> int:
        return int(self.client.count(name, exact=True).count)

    # -- points ------------------------------------------------------------------------------------------

    def _existing(self, name: str, ids: list[str]) -> set[str]:
        found = self.client.retrieve(name, ids=ids, with_payload=False, with_vectors=False)
        return {str(p.id) for p in found}

    def _payloads(self, name: str, ids: list[str] | None) -> dict[str, dict[str, Any]]:
        if ids is not None:
            return {str(p.id): dict(p.payload or {}) for p in self.client.retrieve(name, ids=ids, with_payload=True)}
        return {str(r.id): dict(r.payload or {}) for r in self._scroll(name, None, vectors=False)}

    def _scroll(self, name: str, flt: qm.Filter | None, *, vectors: bool) -> list[Any]:
        records: list[Any] = []
        offset: Any = None
        while True:
            page, offset = self.client.scroll(name, scroll_filter=flt, limit=256, offset=offset,
                                              with_payload=not vectors, with_vectors=vectors)
            records.extend(page)
            if offset is None:
                return records

    def _write(self, name: str, rows: list[Row]) -> None:
        points = [qm.PointStruct(id=pid, vector=vector, payload=payload) for pid, vector, payload in rows]
        self.client.upsert(name, points=points, wait=True)

    def _delete_where(self, name: str, must: list[Condition], must_not: list[Condition]) -> None:
        selector = qm.FilterSelector(filter=server_filter(must, must_not))
        self.client.delete(name, points_selector=selector, wait=True)

    def _product_vectors(self, name: str, product_id: str) -> list[list[float]]:
        flt = server_filter([Condition("value", "product_id", product_id)], [])
        return [r.vector for r in self._scroll(name, flt, vectors=True)]

    # -- alias -------------------------------------------------------------------------------------------

    def _alias_collection(self) -> str | None:
        for description in self.client.get_aliases().aliases:
            if description.alias_name == self.serving_alias:
                return description.collection_name
        return None

    def _swap_alias(self, name: str) -> None:
        """Delete + create in ONE request: the server applies it atomically."""
        operations: list[qm.AliasOperations] = []
        if self._alias_collection() is not None:
            operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.serving_alias)))
        operations.append(qm.CreateAliasOperation(create_alias=qm.CreateAlias(collection_name=name,
                                                                              alias_name=self.serving_alias)))
        self.client.update_collection_aliases(change_aliases_operations=operations)
        log.info("alias %s -> %s", self.serving_alias, name)

    # -- search ------------------------------------------------------------------------------------------

    def _search(self, name: str, query: list[float], top_k: int, must: list[Condition],
                must_not: list[Condition]) -> list[Hit]:
        result = self.client.query_points_groups(name, group_by="product_id", query=query, limit=top_k,
                                                 group_size=1, query_filter=server_filter(must, must_not),
                                                 with_payload=True)
        return [hit_from(group.hits[0].payload, group.hits[0].score) for group in result.groups if group.hits]
