"""The vector-store contract search, ingest and promotion use, written once over two engines' primitives.

`VectorStore` keeps the rules (validation, normalisation, deterministic ids, the replace order, the mean vector of
a product, grouping semantics) and asks an engine only for small primitives: `EdgeStore` (shared/vectorstore/
edge.py, Qdrant's engine embedded in this process, the local default) and `ServerStore` (shared/vectorstore/
qdrant.py, a Qdrant server through qdrant-client). tests/integration/test_vectorstore.py runs one suite on both.
"""

from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from shared.errors import InvalidInput, NotFound
from shared.vectorstore.points import (
    MAX_TOP_K,
    SERVING_ALIAS,
    Condition,
    Hit,
    SearchFilters,
    VectorPoint,
    collection_name,
    filter_conditions,
    point_id,
)

# (point id, unit vector, payload) as the engines write them.
Row = tuple[str, list[float], dict[str, Any]]


def as_unit_vector(vector: Sequence[float] | np.ndarray, dim: int | None, what: str) -> np.ndarray:
    """A validated, L2-normalised float32 copy: stored and query vectors are unit length, so dot = cosine,
    and collections declare DOT distance (no engine re-normalises per query)."""
    array = np.asarray(vector, dtype=np.float32)
    if array.ndim != 1 or (dim is not None and array.shape[0] != dim):
        raise InvalidInput(f"{what}: expected a vector of {dim} floats, got shape {tuple(array.shape)}")
    if not np.all(np.isfinite(array)):
        raise InvalidInput(f"{what}: expected finite floats, got NaN or infinity")
    if not np.any(array):
        raise InvalidInput(f"{what}: expected a non-zero vector (cosine distance is undefined for zero)")
    return array / np.linalg.norm(array)


def hit_from(payload: dict[str, Any] | None, score: float) -> Hit:
    payload = dict(payload or {})
    return Hit(product_id=str(payload.get("product_id", "")), image_id=str(payload.get("image_id", "")),
               score=float(score), payload=payload)


class VectorStore(ABC):
    """Collections per model version behind the serving alias; see the module docstring for the engines."""

    def __init__(self, *, alias: str = SERVING_ALIAS) -> None:
        self.serving_alias = alias

    # -- names ---------------------------------------------------------------------------------------------

    @staticmethod
    def collection_name(model_version: str) -> str:
        return collection_name(model_version)

    @staticmethod
    def point_id(product_id: str, image_id: str, model_version: str) -> str:
        return point_id(product_id, image_id, model_version)

    # -- collections -------------------------------------------------------------------------------------

    def ensure_collection(self, model_version: str, dim: int) -> str:
        """Create the version's collection (DOT on unit vectors, payload indexes) unless it exists; its name.

        An existing collection with another vector size is an error: it was built by a different model.
        """
        if dim < 1:
            raise InvalidInput(f"expected a positive embedding size, got {dim}")
        name = collection_name(model_version)
        with self._writing():
            if not self._exists(name):
                self._create(name, model_version, dim)
                return name
        have = self._dim(name)
        if have != dim:
            raise InvalidInput(f"collection {name!r} holds {have}-d vectors; expected {dim}-d for model "
                               f"{model_version!r}")
        return name

    def list_versions(self) -> list[str]:
        """Model versions that have a collection here."""
        with self._reading():
            return sorted(self._version_of(name) for name in self._names())

    def drop_collection(self, model_version: str, *, force: bool = False) -> bool:
        """Delete a version's collection; refuses the serving one unless `force`. Returns False if absent."""
        name = collection_name(model_version)
        with self._writing():
            if not self._exists(name):
                return False
            if not force and self._alias_collection() == name:
                raise InvalidInput(f"collection {name!r} is served by alias {self.serving_alias!r}; expected a "
                                   "version that is not serving (promote another one first)")
            self._drop(name)
            return True

    def count(self, version_or_alias: str) -> int:
        with self._reading():
            return self._count(self._require(version_or_alias, "count"))

    # -- points ------------------------------------------------------------------------------------------

    def existing_point_ids(self, model_version: str, ids: Sequence[str]) -> set[str]:
        """Which of the point `ids` the version's collection holds already (a resumed re-index skips them)."""
        if not ids:
            return set()
        with self._reading():
            return self._existing(self._require(model_version, "existing_point_ids"), list(ids))

    def payloads(self, version_or_alias: str, ids: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
        """Point id -> payload for `ids` that exist, or for every point (diagnostics, tests: small collections)."""
        with self._reading():
            return self._payloads(self._require(version_or_alias, "payloads"), None if ids is None else list(ids))

    def upsert(self, model_version: str, points: Sequence[VectorPoint], *, batch_size: int = 256) -> int:
        """Write points (idempotent: the id is derived from product, image and version). Returns how many."""
        if not points:
            return 0
        with self._reading():  # the engines take concurrent writes; only collection lifecycles are exclusive
            name = self._require(model_version, "upsert")
            dim = self._dim(name)
            rows: list[Row] = [
                (point_id(p.product_id, p.image_id, model_version),
                 as_unit_vector(p.vector, dim, f"product {p.product_id} image {p.image_id}").tolist(),
                 {**p.payload, "product_id": p.product_id, "image_id": p.image_id, "model_version": model_version})
                for p in points
            ]
            for start in range(0, len(rows), batch_size):
                self._write(name, rows[start : start + batch_size])
        self._after_write(name)
        return len(rows)

    def delete_product(self, model_version: str, product_id: str) -> None:
        """Remove every image point of a product from that version's collection (no error if it had none)."""
        name = collection_name(model_version)
        with self._reading():
            if self._exists(name):
                self._delete_where(name, [Condition("value", "product_id", product_id)], [])

    def replace_product(self, model_version: str, product_id: str, points: Sequence[VectorPoint]) -> None:
        """Make `points` the product's only points: upsert them, then drop its other images' points.

        In that order so a concurrent search sees the product all the time (old or new images), never without
        any. Both engines delete by an indexed `product_id`/`image_id` filter.
        """
        self.upsert(model_version, points)
        keep = [p.image_id for p in points]
        with self._reading():
            name = self._require(model_version, "replace_product")
            self._delete_where(name, [Condition("value", "product_id", product_id)],
                               [Condition("any", "image_id", keep)] if keep else [])

    def get_vector(self, version_or_alias: str, product_id: str) -> np.ndarray:
        """Query vector for "more like this product": the L2-normalised mean of its image vectors.

        The mean (rather than the first image) stands for every view of the product, not just whichever image
        happened to be indexed first. Raises NotFound when the product has no vectors there.
        """
        with self._reading():
            name = self._require(version_or_alias, "get_vector")
            vectors = self._product_vectors(name, product_id)
        if not vectors:
            raise NotFound(f"product {product_id!r} has no indexed images in {name!r}")
        stacked = np.asarray(vectors, dtype=np.float32)
        stacked /= np.linalg.norm(stacked, axis=1, keepdims=True).clip(min=1e-12)
        mean = stacked.mean(axis=0)
        return mean / max(float(np.linalg.norm(mean)), 1e-12)

    # -- alias -------------------------------------------------------------------------------------------

    def set_alias(self, model_version: str) -> None:
        """Point the serving alias at `model_version`'s collection, atomically for readers and across a crash."""
        name = collection_name(model_version)
        with self._writing():
            if not self._exists(name):
                raise NotFound(f"set_alias: no collection {name!r}; expected an indexed model version")
            self._swap_alias(name)

    def alias_target(self) -> str | None:
        """The model version the serving alias points at, or None before the first promotion."""
        with self._reading():
            name = self._alias_collection()
            return None if name is None else self._version_of(name)

    # -- search ------------------------------------------------------------------------------------------

    def search(self, version_or_alias: str, vector: Sequence[float] | np.ndarray, top_k: int,
               filters: SearchFilters | None = None, exclude_product_id: str | None = None) -> list[Hit]:
        """Top `top_k` products by cosine similarity under `filters`, each once, represented by its best image."""
        if not 1 <= top_k <= MAX_TOP_K:
            raise InvalidInput(f"expected 1 <= top_k <= {MAX_TOP_K}, got {top_k}")
        must, must_not = filter_conditions(filters, [exclude_product_id] if exclude_product_id else [])
        with self._reading():
            name = self._require(version_or_alias, "search")
            query = as_unit_vector(vector, self._dim(name), "query")
            return self._search(name, query.tolist(), top_k, must, must_not)

    # -- lifecycle ---------------------------------------------------------------------------------------

    def optimize(self, model_version: str) -> None:
        """Build the version's search index now (a bulk load calls this before serving); engines that index
        in the background need nothing."""
        return None

    @abstractmethod
    def close(self) -> None: ...

    # -- engine primitives -------------------------------------------------------------------------------

    def _require(self, version_or_alias: str, what: str) -> str:
        """The collection (or server-side alias) name to address; NotFound if there is none."""
        name = self._resolve(version_or_alias)
        if name is None or not self._exists(name):
            shown = name or f"alias {version_or_alias!r}"
            raise NotFound(f"{what}: no collection {shown!r}; expected an indexed model version")
        return name

    def _resolve(self, version_or_alias: str) -> str | None:
        return self.serving_alias if version_or_alias == self.serving_alias else collection_name(version_or_alias)

    @contextlib.contextmanager
    def _reading(self) -> Iterator[None]:
        yield

    @contextlib.contextmanager
    def _writing(self) -> Iterator[None]:
        yield

    def _after_write(self, name: str) -> None:
        """Hook after an upsert (Edge builds its index here once enough points wait for it)."""
        return None

    @abstractmethod
    def _exists(self, name: str) -> bool: ...

    @abstractmethod
    def _create(self, name: str, model_version: str, dim: int) -> None: ...

    @abstractmethod
    def _drop(self, name: str) -> None: ...

    @abstractmethod
    def _names(self) -> list[str]: ...

    @abstractmethod
    def _dim(self, name: str) -> int: ...

    @abstractmethod
    def _version_of(self, name: str) -> str: ...

    @abstractmethod
    def _count(self, name: str) -> int: ...

    @abstractmethod
    def _existing(self, name: str, ids: list[str]) -> set[str]: ...

    @abstractmethod
    def _payloads(self, name: str, ids: list[str] | None) -> dict[str, dict[str, Any]]: ...

    @abstractmethod
    def _write(self, name: str, rows: list[Row]) -> None: ...

    @abstractmethod
    def _delete_where(self, name: str, must: list[Condition], must_not: list[Condition]) -> None: ...

    @abstractmethod
    def _product_vectors(self, name: str, product_id: str) -> list[list[float]]: ...

    @abstractmethod
    def _alias_collection(self) -> str | None: ...

    @abstractmethod
    def _swap_alias(self, name: str) -> None: ...

    @abstractmethod
    def _search(self, name: str, query: list[float], top_k: int, must: list[Condition],
                must_not: list[Condition]) -> list[Hit]: ...
