"""Product image vectors in Qdrant: one collection per model version, the alias `products` on the serving one.

The same code runs against a Qdrant server (docker-compose / k8s) and against qdrant-client's local mode
(`QdrantClient(path=...)` or `":memory:"`), which is what runs here. Differences that matter, measured with
qdrant-client 1.20.0:

* Aliases: local mode implements `update_collection_aliases` (applied to a copy and swapped in, persisted in
  its `meta.json`), so no emulation is needed; `set_alias` sends delete+create in one call in both modes.
* Grouping by product: the server groups natively (`query_points_groups`). Local mode's grouping scores and
  materialises *every* point (about 110-190 ms on 5,000 points against 4-30 ms for a plain top-80), so in local
  mode we over-fetch points (`OVERFETCH` per product at first, then what recent queries needed) and group in
  Python, widening the fetch until `top_k` products are found or the collection is exhausted. Both give the
  same result: each product once, with its best image.
* Payload indexes do nothing in local mode (brute force); creating them works and is skipped silently.
* Local mode is not thread-safe (plain dicts and numpy arrays, one SQLite file per collection) and holds a file
  lock per path, so calls on a local client are serialised with a lock; a server client is used concurrently.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
import warnings
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
from qdrant_client import QdrantClient
from qdrant_client import models as qm

from shared.errors import InvalidInput, NotFound
from shared.vectorstore.client import is_local, tune_local_persistence
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
    payload_matches,
    point_id,
)

log = logging.getLogger(__name__)

OVERFETCH = 4
# What local-mode candidates carry (see `_search_overfetch`): the grouping key and the soft-delete flag, or,
# when the query filters, every field the filters read (the indexed ones).
_CANDIDATE_FIELDS = ["product_id", "image_id", "deleted"]


def _as_vector(vector: Sequence[float] | np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """A validated, L2-normalised float32 copy: stored and query vectors are unit length, so dot = cosine.

    float32 on purpose: local mode keeps a new collection's vectors as float32, and a float64 query (what a
    list of floats becomes) makes numpy up-cast the whole matrix on every search (0.47 vs 0.05 ms on 5,000).
    """
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or (dim is not None and array.shape[0] != dim):
        raise InvalidInput(f"{what}: expected a vector of {dim} floats, got shape {tuple(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise InvalidInput(f"{what}: expected finite floats, got NaN or infinity")
    if not np.any(array):
        raise InvalidInput(f"{what}: expected a non-zero vector (cosine distance is undefined for zero)")
    return array / np.linalg.norm(array)


class VectorStore:
    """Collections per model version behind the serving alias. Takes a ready client (see `open_client`)."""

    def __init__(self, client: QdrantClient, *, alias: str = SERVING_ALIAS) -> None:
        self.client = client
        self.serving_alias = alias
        self.local = is_local(client)
        self._lock: threading.RLock | None = threading.RLock() if self.local else None
        self._dims: dict[str, int] = {}
        self._versions: dict[str, str] = {}  # collection name -> model version
        self._depth: dict[str, float] = {}  # local mode: candidates needed per product found (see _search_overfetch)
        if self.local:
            for description in client.get_collections().collections:
                tune_local_persistence(client, description.name)

    @contextlib.contextmanager
    def _guard(self) -> Iterator[None]:
        if self._lock is None:
            yield
        else:
            with self._lock:
                yield

    # -- names ---------------------------------------------------------------------------------------------

    @staticmethod
    def collection_name(model_version: str) -> str:
        return collection_name(model_version)

    @staticmethod
    def point_id(product_id: str, image_id: str, model_version: str) -> str:
        return point_id(product_id, image_id, model_version)

    def _target(self, version_or_alias: str) -> str:
        return self.serving_alias if version_or_alias == self.serving_alias else collection_name(version_or_alias)

    def _require(self, name: str, what: str) -> None:
        if not self.client.collection_exists(name):
            raise NotFound(f"{what}: no collection {name!r}; expected an indexed model version")

    def _dim(self, name: str) -> int:
        if name not in self._dims:
            params = self.client.get_collection(name).config.params.vectors
            assert isinstance(params, qm.VectorParams)
            self._dims[name] = params.size
        return self._dims[name]

    # -- collections -------------------------------------------------------------------------------------

    def ensure_collection(self, model_version: str, dim: int) -> str:
        """Create the version's collection (dot product on unit vectors, payload indexes) unless it exists.

        Every vector is normalised on the way in (`_as_vector`), so dot product ranks exactly as cosine. Declaring
        it DOT matters in local mode, which re-normalises all stored vectors on every COSINE query (profiled:
        3.1 -> 2.1 ms per top-80 query on 5,000 points); a server normalises once at upsert either way.
        Returns the collection name.

        An existing collection with another vector size is an error: it was built by a different model.
        """
        if dim < 1:
            raise InvalidInput(f"expected a positive embedding size, got {dim}")
        name = collection_name(model_version)
        with self._guard():
            if self.client.collection_exists(name):
                have = self._dim(name)
                if have != dim:
                    raise InvalidInput(
                        f"collection {name!r} holds {have}-d vectors; expected {dim}-d for model {model_version!r}"
                    )
                return name
            try:
                self.client.create_collection(
                    name,
                    vectors_config=qm.VectorParams(size=dim, distance=qm.Distance.DOT),
                    metadata={"model_version": model_version, "dim": dim},
                )
            except Exception:
                # A concurrent creator (another replica) won the race: fine if it is there now.
                if not self.client.collection_exists(name):
                    raise
            if self.local:
                tune_local_persistence(self.client, name)
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Payload indexes have no effect")
                for field_name, schema in PAYLOAD_INDEXES.items():
                    self.client.create_payload_index(name, field_name=field_name, field_schema=schema, wait=True)
            self._dims[name] = dim
        log.info("created collection %s (dim %d) for model %s", name, dim, model_version)
        return name

    def list_versions(self) -> list[str]:
        """Model versions that have a collection here."""
        with self._guard():
            names = [c.name for c in self.client.get_collections().collections if c.name.startswith(COLLECTION_PREFIX)]
            return sorted(self._version_of(name) for name in names)

    def _version_of(self, name: str) -> str:
        # Cached: a collection's name is derived from its version, so the mapping never changes, and reading
        # the metadata builds a whole CollectionInfo (a tenth of a millisecond or more, on every query).
        if name not in self._versions:
            metadata = self.client.get_collection(name).config.metadata or {}
            version = metadata.get("model_version")
            self._versions[name] = str(version) if version else name.removeprefix(COLLECTION_PREFIX)
        return self._versions[name]

    def drop_collection(self, model_version: str, *, force: bool = False) -> bool:
        """Delete a version's collection; refuses the serving one unless `force`. Returns False if absent."""
        name = collection_name(model_version)
        with self._guard():
            if not self.client.collection_exists(name):
                return False
            if not force and self._alias_collection() == name:
                raise InvalidInput(
                    f"collection {name!r} is served by alias {self.serving_alias!r}; expected a version that is "
                    "not serving (promote another one first)"
                )
            self.client.delete_collection(name)
            self._dims.pop(name, None)
            return True

    def count(self, version_or_alias: str) -> int:
        name = self._target(version_or_alias)
        with self._guard():
            self._require(name, "count")
            return int(self.client.count(name, exact=True).count)

    # -- points ------------------------------------------------------------------------------------------

    def existing_point_ids(self, model_version: str, ids: Sequence[str]) -> set[str]:
        """Which of the point `ids` the version's collection holds already (a resumed re-index skips them)."""
        if not ids:
            return set()
        with self._guard():
            found = self.client.retrieve(collection_name(model_version), ids=list(ids), with_payload=False,
                                         with_vectors=False)
        return {str(p.id) for p in found}

    def upsert(self, model_version: str, points: Sequence[VectorPoint], *, batch_size: int = 256) -> int:
        """Write points (idempotent: the id is derived from product, image and version). Returns how many."""
        if not points:
            return 0
        name = collection_name(model_version)
        with self._guard():
            self._require(name, "upsert")
            dim = self._dim(name)
            structs = [
                qm.PointStruct(
                    id=point_id(p.product_id, p.image_id, model_version),
                    vector=_as_vector(p.vector, dim, f"product {p.product_id} image {p.image_id}").tolist(),
                    payload={
                        **p.payload,
                        "product_id": p.product_id,
                        "image_id": p.image_id,
                        "model_version": model_version,
                    },
                )
                for p in points
            ]
            for start in range(0, len(structs), batch_size):
                self.client.upsert(name, points=structs[start : start + batch_size], wait=True)
        return len(structs)

    def delete_product(self, model_version: str, product_id: str) -> None:
        """Remove every image point of a product from that version's collection (no error if it had none)."""
        name = collection_name(model_version)
        selector = qm.FilterSelector(
            filter=qm.Filter(must=[qm.FieldCondition(key="product_id", match=qm.MatchValue(value=product_id))])
        )
        with self._guard():
            if self.client.collection_exists(name):
                self.client.delete(name, points_selector=selector, wait=True)

    def replace_product(self, model_version: str, product_id: str, points: Sequence[VectorPoint],
                        previous_image_ids: Iterable[str]) -> None:
        """Make `points` the product's only points: upsert them, drop its other images' points.

        A server deletes by a `product_id` filter (indexed). Local mode evaluates filters in Python on every
        point (O(collection) per product: profiled as the ingest bottleneck), so there the stale points are
        deleted by their deterministic ids, from the image ids the caller knew before this write.
        """
        if not self.local:
            self.delete_product(model_version, product_id)
        else:
            keep = {p.image_id for p in points}
            stale = [point_id(product_id, i, model_version) for i in previous_image_ids if i not in keep]
            if stale:
                with self._guard():
                    self.client.delete(collection_name(model_version),
                                       points_selector=qm.PointIdsList(points=stale), wait=True)
        self.upsert(model_version, points)

    def get_vector(self, version_or_alias: str, product_id: str) -> np.ndarray:
        """Query vector for "more like this product": the L2-normalised mean of its image vectors.

        The mean (rather than the first image) stands for every view of the product, not just whichever image
        happened to be indexed first. Raises NotFound when the product has no vectors there.
        """
        name = self._target(version_or_alias)
        flt = qm.Filter(must=[qm.FieldCondition(key="product_id", match=qm.MatchValue(value=product_id))])
        with self._guard():
            self._require(name, "get_vector")
            vectors: list[Any] = []
            offset: Any = None
            while True:
                page, offset = self.client.scroll(
                    name, scroll_filter=flt, limit=256, offset=offset, with_payload=False, with_vectors=True
                )
                vectors.extend(p.vector for p in page)
                if offset is None:
                    break
        if not vectors:
            raise NotFound(f"product {product_id!r} has no indexed images in {name!r}")
        stacked = np.asarray(vectors, dtype=np.float32)
        stacked /= np.linalg.norm(stacked, axis=1, keepdims=True).clip(min=1e-12)
        mean = stacked.mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    # -- alias -------------------------------------------------------------------------------------------

    def _alias_collection(self) -> str | None:
        for description in self.client.get_aliases().aliases:
            if description.alias_name == self.serving_alias:
                return description.collection_name
        return None

    def set_alias(self, model_version: str) -> None:
        """Point the serving alias at `model_version`'s collection: delete+create in ONE request (atomic)."""
        name = collection_name(model_version)
        with self._guard():
            self._require(name, "set_alias")
            operations: list[qm.AliasOperations] = []
            if self._alias_collection() is not None:
                operations.append(qm.DeleteAliasOperation(delete_alias=qm.DeleteAlias(alias_name=self.serving_alias)))
            operations.append(
                qm.CreateAliasOperation(
                    create_alias=qm.CreateAlias(collection_name=name, alias_name=self.serving_alias)
                )
            )
            self.client.update_collection_aliases(change_aliases_operations=operations)
        log.info("alias %s -> %s", self.serving_alias, name)

    def alias_target(self) -> str | None:
        """The model version the serving alias points at, or None before the first promotion."""
        with self._guard():
            name = self._alias_collection()
            return None if name is None else self._version_of(name)

    # -- search ------------------------------------------------------------------------------------------

    def search(
        self,
        version_or_alias: str,
        vector: Sequence[float] | np.ndarray,
        top_k: int,
        filters: SearchFilters | None = None,
        exclude_product_id: str | None = None,
    ) -> list[Hit]:
        """Top `top_k` products by cosine similarity, each once, represented by its best-scoring image."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"expected 1 <= top_k <= {MAX_TOP_K}, got {top_k}")
        name = self._target(version_or_alias)
        flt = build_filter(filters, exclude_product_id)
        with self._guard():
            self._require(name, "search")
            query = _as_vector(vector, self._dim(name), "query")
            if self.local:
                return self._search_overfetch(name, query, top_k, filters, exclude_product_id)
            result = self.client.query_points_groups(
                name, group_by="product_id", query=query.tolist(), limit=top_k, group_size=1, query_filter=flt,
                with_payload=True)
        return [_hit(group.hits[0].payload, group.hits[0].score) for group in result.groups if group.hits]

    def _search_overfetch(self, name: str, query: np.ndarray, top_k: int, filters: SearchFilters | None,
                          exclude_product_id: str | None) -> list[Hit]:
        """Local mode: unfiltered vector query, widened until enough products pass the filters in Python.

        Local mode evaluates a query filter in Python on EVERY point (profiled: 77% of FindSimilar on 5,000
        images); checking only the over-fetched candidates costs a few hundred payload checks instead. The
        candidates carry only the fields grouping and filtering read: local mode deep-copies every payload
        it returns (profiled: half its search time), so the full payload is fetched for the winners alone.
        """
        fields = list(PAYLOAD_INDEXES) if filters is not None and filters != SearchFilters() else _CANDIDATE_FIELDS
        # Candidates per wanted product, learnt from recent queries: each candidate costs local mode a pydantic
        # object, and a fixed 4x fetched twice what the synthetic catalogue needs (27 of 80 at p50, 43 at most).
        per_product = self._depth.get(name, float(OVERFETCH))
        limit = math.ceil(top_k * per_product * 1.25) + 4
        while True:
            points = self.client.query_points(name, query=query, limit=limit, with_payload=fields).points
            best: dict[str, qm.ScoredPoint] = {}
            depth = len(points)
            for rank, point in enumerate(points, 1):  # sorted by score: a product's first image is its best
                payload = point.payload or {}
                product_id = str(payload.get("product_id", ""))
                if product_id not in best and payload_matches(payload, filters, exclude_product_id):
                    best[product_id] = point
                    if len(best) == top_k:
                        depth = rank
                        break
            if len(best) >= top_k or len(points) < limit:
                winners = list(best.values())
                break
            limit *= 4
        self._depth[name] = 0.9 * per_product + 0.1 * max(1.0, depth / top_k)
        payloads = {p.id: p.payload for p in self.client.retrieve(name, [p.id for p in winners], with_payload=True)}
        return [_hit(payloads.get(p.id, p.payload), p.score) for p in winners]


def _hit(payload: dict[str, Any] | None, score: float) -> Hit:
    payload = dict(payload or {})
    return Hit(product_id=str(payload.get("product_id", "")), image_id=str(payload.get("image_id", "")),
               score=float(score), payload=payload)
