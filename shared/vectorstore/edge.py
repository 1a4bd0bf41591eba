"""The embedded engine: Qdrant Edge (`qdrant-edge-py`, Qdrant's own engine in this process), the local default.

Layout under the store's folder (one process owns it: Edge locks each shard's WAL):

    aliases.json                   {"products": "products_<version>"}, replaced by atomic rename
    collections/<name>/shard*/     one Edge shard per model version (a new folder after each index build)
    collections/<name>/meta.json   {"model_version", "dim", "shard"}; written last, so a folder without it is a
                                   creation a crash interrupted, and is removed on open (as are shard folders
                                   it does not name: an index build a crash interrupted)

Edge has no aliases, so the alias is that record: swapping it is one `os.replace` (readers in this process see
the old or the new collection, never neither; after a crash the file is the old or the new record, never a
mix). Edge has no grouping either: `_search` asks for a few images per wanted product and, when products
repeat, asks again excluding the products found (exact, see `_search`). Filters run inside the engine on
payload indexes. Below `index_after_points` unindexed points a segment is searched exactly; above, HNSW is built
(optionally over int8-quantised vectors) in a child process on a copy of the shard, which is swapped in with
the writes made meanwhile replayed (edge_build.py): Edge's own build holds the interpreter lock throughout.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import subprocess
import threading
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import qdrant_edge as qe

from shared.vectorstore.edge_build import BuildFailed, ChildBuild
from shared.vectorstore.points import COLLECTION_PREFIX, PAYLOAD_INDEXES, SERVING_ALIAS, Condition, Hit
from shared.vectorstore.rwlock import ReadWriteLock
from shared.vectorstore.store import Row, VectorStore, hit_from

log = logging.getLogger(__name__)

ALIASES_FILE = "aliases.json"
# Images asked for per wanted product in a search round; a catalogue with more images per product costs one
# more round (a query excluding the products found), never a wrong answer.
FETCH_PER_PRODUCT = 3
# Payload indexes held in RAM: a filtered search checks its conditions on every candidate point, and every search
# checks `deleted`. Storefronts filter by category pages and price caps, so the category index is a tenant one
# (the engine stores each category's points together) and the price index is kept ordered for ranges. At 300k
# points, a storefront filter (one category of 12, price under 40, in stock: 1 % of the points) took 3.9-4.4 ms
# a query with the default indexes, 2.4-3.4 ms pinned, 1.6-1.9 ms with both (unfiltered: 1.3-1.7 ms, was 1.9-2.8).
_INDEX_PARAMS = {"keyword": qe.KeywordIndexParams(memory=qe.Memory.Pinned),
                 "float": qe.FloatIndexParams(memory=qe.Memory.Pinned),
                 "bool": qe.BoolIndexParams(memory=qe.Memory.Pinned)}
_FIELD_INDEX_PARAMS = {"category": qe.KeywordIndexParams(memory=qe.Memory.Pinned, is_tenant=True),
                       "price": qe.FloatIndexParams(memory=qe.Memory.Pinned, is_principal=True)}


def _match_value(value: Any) -> qe.MatchValue:
    # qdrant-edge-py 0.9.0 reads a Python bool as the integer 1, which matches no boolean payload; numpy's
    # bool_ is read as a bool (verified: MatchValue(True) matched 0 of 2,499 in-stock points, np.bool_ all).
    return qe.MatchValue(np.bool_(value) if isinstance(value, bool) else value)


def _condition(c: Condition) -> qe.FieldCondition:
    if c.kind == "any":
        return qe.FieldCondition(key=c.key, match=qe.MatchAny(list(c.value)))
    if c.kind == "range":
        return qe.FieldCondition(key=c.key, range=qe.RangeFloat(gte=c.value[0], lte=c.value[1]))
    return qe.FieldCondition(key=c.key, match=_match_value(c.value))


def edge_filter(must: list[Condition], must_not: list[Condition]) -> qe.Filter:
    return qe.Filter(must=[_condition(c) for c in must] or None, must_not=[_condition(c) for c in must_not] or None)


def write_atomically(path: Path, data: dict) -> None:
    """Replace `path` with `data` as JSON so that a crash leaves the old or the new file, never a torn one."""
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w") as handle:
        json.dump(data, handle)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    directory = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(directory)  # make the rename itself durable
    finally:
        os.close(directory)


class EdgeStore(VectorStore):
    """The contract on Qdrant Edge shards under `path` (created if missing)."""

    def __init__(self, path: str | Path, *, alias: str = SERVING_ALIAS, quantize_int8: bool = False,
                 index_after_points: int = 20_000, hnsw_ef: int = 256) -> None:
        super().__init__(alias=alias)
        self.path = Path(path)
        self.quantize_int8 = quantize_int8
        self.index_after_points = index_after_points
        self.hnsw_ef = hnsw_ef
        self._lock = ReadWriteLock()
        self._shards: dict[str, qe.EdgeShard] = {}
        self._meta: dict[str, dict[str, Any]] = {}
        # Collections whose index is being built elsewhere: the writes made meanwhile, replayed onto the build.
        self._journals: dict[str, list[qe.UpdateOperation]] = {}
        self._journal_lock = threading.Lock()  # a write and its journal entry, in one order for the replay
        self._background: dict[str, threading.Thread] = {}
        self._children: dict[str, ChildBuild] = {}
        # int8 scores alone cap recall (at 300k: 0.936 whatever hnsw_ef) and Edge does not rescore unless asked.
        # Measured at 300k with the bench's consumer photos: oversampling 2 at ef 128 gave recall@20 0.965,
        # 4 at ef 256 0.989, ef 512 0.997 (+0.6 ms); the store's default ef is 256.
        self._rescore = qe.QuantizationSearchParams(rescore=True, oversampling=4.0) if quantize_int8 else None
        self._closing = False
        (self.path / "collections").mkdir(parents=True, exist_ok=True)
        aliases = self.path / ALIASES_FILE
        self._aliases: dict[str, str] = json.loads(aliases.read_text()) if aliases.exists() else {}
        for folder in sorted((self.path / "collections").iterdir()):
            if not (folder / "meta.json").exists():
                log.warning("removing %s: its creation was interrupted", folder)
                shutil.rmtree(folder)
                continue
            meta = self._meta[folder.name] = json.loads((folder / "meta.json").read_text())
            shard = meta.setdefault("shard", "shard")
            for leftover in folder.glob("shard*"):
                if leftover.name != shard:
                    log.warning("removing %s: an index build a crash interrupted", leftover)
                    shutil.rmtree(leftover)
            self._shards[folder.name] = qe.EdgeShard.load(str(folder / shard))

    def _reading(self) -> contextlib.AbstractContextManager[None]:
        return self._lock.read()

    def _writing(self) -> contextlib.AbstractContextManager[None]:
        return self._lock.write()

    def close(self) -> None:
        self._closing = True
        for child in list(self._children.values()):
            child.cancel()  # the build restarts once enough points wait again; exact search serves meanwhile
        for thread in list(self._background.values()):
            thread.join()
        with self._lock.write():
            for shard in self._shards.values():
                shard.flush()
                shard.close()
            self._shards.clear()

    def optimize(self, model_version: str) -> None:
        """Build HNSW for the collection's segments above the indexing threshold, in a child process: the caller
        waits, every other thread of this process goes on (searches, ingest)."""
        with self._lock.read():
            name = self._require(model_version, "optimize")
        self._build(name)

    def _build(self, name: str) -> bool:
        """Build `name`'s index on a copy and swap it in (edge_build.py); False when one is already running."""
        folder = self.path / "collections" / name
        with self._lock.write():
            if self._closing or name in self._journals or name not in self._shards:
                return False
            self._shards[name].flush()
            built = f"shard-{uuid.uuid4().hex[:8]}"
            shutil.copytree(folder / self._meta[name]["shard"], folder / built)
            self._journals[name] = []
        try:
            child = self._children[name] = ChildBuild(folder / built)
            child.wait()
        except (BuildFailed, OSError, subprocess.SubprocessError) as exc:
            with self._lock.write():
                self._journals.pop(name, None)
            shutil.rmtree(folder / built, ignore_errors=True)
            if self._closing:
                log.info("index build of %s stopped: the store is closing", name)
            else:
                log.error("could not build the search index of %s (it is searched exactly meanwhile): %s", name, exc)
            return False
        finally:
            self._children.pop(name, None)
        with self._lock.write():
            journal = self._journals.pop(name, None)
            if journal is None or name not in self._shards:  # dropped meanwhile
                shutil.rmtree(folder / built, ignore_errors=True)
                return False
            shard = qe.EdgeShard.load(str(folder / built))
            for operation in journal:
                shard.update(operation)
            shard.flush()
            old, meta = self._meta[name]["shard"], {**self._meta[name], "shard": built}
            write_atomically(folder / "meta.json", meta)
            replaced, self._shards[name], self._meta[name] = self._shards[name], shard, meta
            replaced.close()
            shutil.rmtree(folder / old, ignore_errors=True)
        log.info("built the search index of %s (%d writes made meanwhile replayed)", name, len(journal))
        return True

    # -- collections -------------------------------------------------------------------------------------

    def _exists(self, name: str) -> bool:
        return name in self._shards

    def _create(self, name: str, model_version: str, dim: int) -> None:
        folder = self.path / "collections" / name
        shutil.rmtree(folder, ignore_errors=True)
        quantization = qe.ScalarQuantizationConfig(type=qe.ScalarType.Int8, always_ram=True) \
            if self.quantize_int8 else None
        config = qe.EdgeConfig(
            vectors=qe.EdgeVectorParams(size=dim, distance=qe.Distance.Dot),
            hnsw_config=qe.HnswIndexConfig(m=16, ef_construct=64, full_scan_threshold=10_000),
            quantization_config=quantization,
            # KB of vectors in a segment before it gets HNSW: below it, exact search is as fast and exact.
            optimizers=qe.EdgeOptimizersConfig(indexing_threshold=max(1, self.index_after_points * dim * 4 // 1024)),
            # Payloads in the page cache rather than read from disk blocks on demand: a search reads the payloads
            # of the points it finds (their product, the fields to show). At 300k points, 60 cold reads took
            # 5.3 ms (p50) with the default placement and 1.3-2.1 ms with this one. Fixed at creation, like the
            # index parameters: a store created before keeps its placement until `fashion reindex`.
            payload_memory=qe.Memory.Cached,
        )
        shard = qe.EdgeShard.create(str(folder / "shard"), config)
        for field_name, kind in PAYLOAD_INDEXES.items():
            params = _FIELD_INDEX_PARAMS.get(field_name, _INDEX_PARAMS[kind])
            shard.update(qe.UpdateOperation.create_field_index(field_name, params))
        shard.flush()
        meta = {"model_version": model_version, "dim": dim, "shard": "shard"}
        write_atomically(folder / "meta.json", meta)
        self._shards[name], self._meta[name] = shard, meta
        log.info("created Edge collection %s (dim %d) for model %s", name, dim, model_version)

    def _drop(self, name: str) -> None:
        shard = self._shards.pop(name)
        self._meta.pop(name)
        self._journals.pop(name, None)  # a build in progress is discarded when it ends
        shard.close()
        shutil.rmtree(self.path / "collections" / name)

    def _names(self) -> list[str]:
        return [name for name in self._shards if name.startswith(COLLECTION_PREFIX)]

    def _dim(self, name: str) -> int:
        return int(self._meta[name]["dim"])

    def _version_of(self, name: str) -> str:
        return str(self._meta[name]["model_version"])

    def _count(self, name: str) -> int:
        return int(self._shards[name].count(qe.CountRequest(exact=True)))

    def _resolve(self, version_or_alias: str) -> str | None:
        if version_or_alias == self.serving_alias:
            return self._aliases.get(self.serving_alias)
        return super()._resolve(version_or_alias)

    # -- points ------------------------------------------------------------------------------------------

    def _existing(self, name: str, ids: list[str]) -> set[str]:
        return {str(r.id) for r in self._shards[name].retrieve(ids, with_payload=False, with_vector=False)}

    def _payloads(self, name: str, ids: list[str] | None) -> dict[str, dict[str, Any]]:
        shard = self._shards[name]
        if ids is not None:
            return {str(r.id): dict(r.payload or {}) for r in shard.retrieve(ids, with_payload=True, with_vector=False)}
        return {str(r.id): dict(r.payload or {}) for r in self._scroll(name, None, vectors=False)}

    def _scroll(self, name: str, flt: qe.Filter | None, *, vectors: bool) -> list[Any]:
        records: list[Any] = []
        offset: Any = None
        while True:
            page, offset = self._shards[name].scroll(qe.ScrollRequest(offset=offset, limit=256, filter=flt,
                                                                      with_payload=not vectors, with_vector=vectors))
            records.extend(page)
            if offset is None:
                return records

    def _write(self, name: str, rows: list[Row]) -> None:
        points = [qe.Point(pid, vector, payload) for pid, vector, payload in rows]
        self._update(name, qe.UpdateOperation.upsert_points(points))

    def _update(self, name: str, operation: qe.UpdateOperation) -> None:
        """Apply a write; while the collection's index is built elsewhere, journal it for the build too."""
        if name not in self._journals:
            self._shards[name].update(operation)
            return
        with self._journal_lock:
            self._shards[name].update(operation)
            journal = self._journals.get(name)
            if journal is not None:
                journal.append(operation)

    def _after_write(self, name: str) -> None:
        """Index a collection in the background once `index_after_points` points wait unindexed (exact search
        slows past that); the writer does not wait."""
        with self._lock.read():
            shard = self._shards.get(name)
            if shard is None or name in self._journals or name in self._background:
                return
            info = shard.info()
            waiting = info.points_count - info.indexed_vectors_count
            if waiting < self.index_after_points:
                return
            log.info("indexing %s in the background: %d of %d points unindexed", name, waiting, info.points_count)
            thread = threading.Thread(target=self._build_then_forget, args=(name,), name=f"index-{name}",
                                      daemon=True)
            self._background[name] = thread
        thread.start()

    def _build_then_forget(self, name: str) -> None:
        try:
            self._build(name)
        finally:
            self._background.pop(name, None)

    def _delete_where(self, name: str, must: list[Condition], must_not: list[Condition]) -> None:
        self._update(name, qe.UpdateOperation.delete_points_by_filter(edge_filter(must, must_not)))

    def _product_vectors(self, name: str, product_id: str) -> list[list[float]]:
        flt = edge_filter([Condition("value", "product_id", product_id)], [])
        return [r.vector for r in self._scroll(name, flt, vectors=True)]

    # -- alias -------------------------------------------------------------------------------------------

    def _alias_collection(self) -> str | None:
        return self._aliases.get(self.serving_alias)

    def _swap_alias(self, name: str) -> None:
        for shard in self._shards.values():
            shard.flush()  # the record must never point at data that a crash could still lose
        aliases = {**self._aliases, self.serving_alias: name}
        write_atomically(self.path / ALIASES_FILE, aliases)
        self._aliases = aliases  # one reference swap: a reader resolves the old or the new collection
        log.info("alias %s -> %s", self.serving_alias, name)

    # -- search ------------------------------------------------------------------------------------------

    def _search(self, name: str, query: list[float], top_k: int, must: list[Condition],
                must_not: list[Condition]) -> list[Hit]:
        """Each product once with its best image, exactly as native grouping would return it.

        A round returns the best remaining points in score order, so the first point of a product is its best
        image, and every point of a later round (which excludes the products found so far) scores at most the
        last of the round before: appending in arrival order keeps the global order.

        Rounds read the points' payloads with them (the product to group by, the fields to show), so a search is
        one engine call when one round suffices, as it does with a few images per product. Measured at 300k
        points with payloads in the page cache: 1.0-1.5 ms a search (p50), against 1.5 ms for payload-free
        rounds plus a memo of each point's product and a second read of the winners' payloads.
        """
        shard = self._shards[name]
        params = qe.SearchParams(hnsw_ef=max(self.hnsw_ef, top_k * FETCH_PER_PRODUCT), quantization=self._rescore)
        best: dict[str, Hit] = {}
        while len(best) < top_k:
            excluded = [Condition("any", "product_id", list(best))] if best else []
            limit = (top_k - len(best)) * FETCH_PER_PRODUCT
            points = shard.query(qe.QueryRequest(limit=limit, query=qe.Query.Nearest(query), params=params,
                                                 filter=edge_filter(must, must_not + excluded), with_payload=True))
            for point in points:
                payload = point.payload
                product = payload.get("product_id") if payload else None
                if product is not None and product not in best:
                    best[product] = hit_from(payload, point.score)
            if len(points) < limit:  # nothing more matches
                break
        return list(best.values())[:top_k]
