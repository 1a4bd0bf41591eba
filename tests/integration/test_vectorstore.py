"""The vector-store contract, one suite on both engines: Qdrant Edge in a folder (the local default) and the
server engine on qdrant-client's in-memory mode (which speaks the server API); then what only Edge has (its
alias record on disk, crash leftovers, index building) and the migration from the previous local mode."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from shared.errors import InvalidInput, NotFound
from shared.vectorstore import (
    SERVING_ALIAS,
    SearchFilters,
    VectorPoint,
    VectorStore,
    collection_name,
    open_store,
    point_id,
)
from shared.vectorstore.edge import ALIASES_FILE, EdgeStore

DIM = 8


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


@pytest.fixture(params=["edge", "server"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VectorStore]:
    opened = open_store(tmp_path / "qdrant" if request.param == "edge" else ":memory:")
    try:
        yield opened
    finally:
        opened.close()


# Four products around the query direction e0, with payloads that each filter splits differently.
CATALOGUE = {
    "p1": ({"category": "dress", "attributes": ["floral", "maxi"], "price": 50.0, "in_stock": True}, unit(1, 0.1)),
    "p2": ({"category": "dress", "attributes": ["floral"], "price": 150.0, "in_stock": True}, unit(1, 0.2)),
    "p3": ({"category": "tee", "attributes": ["floral", "maxi"], "price": 20.0, "in_stock": False}, unit(1, 0.3)),
    "p4": ({"category": "skirt", "attributes": ["maxi"], "price": 80.0, "in_stock": True}, unit(1, 0.4)),
}


def load_catalogue(store: VectorStore, version: str = "v1") -> None:
    store.ensure_collection(version, DIM)
    store.upsert(version, [VectorPoint(pid, f"{pid}-img0", vec, payload) for pid, (payload, vec) in CATALOGUE.items()])


def found(store: VectorStore, filters: SearchFilters | None = None, **kw: object) -> list[str]:
    return [hit.product_id for hit in store.search("v1", unit(1), top_k=10, filters=filters, **kw)]  # type: ignore[arg-type]


def test_names_and_ids_are_deterministic() -> None:
    assert point_id("p1", "img1", "v1") == point_id("p1", "img1", "v1")
    ids = {
        point_id("p1", "img1", "v1"),
        point_id("p1", "img2", "v1"),
        point_id("p1", "img1", "v2"),
        point_id("p2", "img1", "v1"),
    }
    assert len(ids) == 4
    assert collection_name("fashionnet-lite0.3") == "products_fashionnet-lite0.3"
    odd = collection_name("run 7/best:ckpt")
    assert odd.startswith("products_run_7_best_ckpt_") and odd != collection_name("run_7_best_ckpt")
    with pytest.raises(InvalidInput, match="non-empty model version"):
        collection_name(" ")


def test_upsert_twice_creates_no_duplicates(store: VectorStore) -> None:
    load_catalogue(store)
    load_catalogue(store)
    assert store.count("v1") == len(CATALOGUE)
    ids = [point_id("p1", "p1-img0", "v1"), point_id("p9", "p9-img0", "v1")]
    assert store.existing_point_ids("v1", ids) == {ids[0]} and store.existing_point_ids("v1", []) == set()
    assert store.ensure_collection("v1", DIM) == collection_name("v1")
    assert store.list_versions() == ["v1"]
    with pytest.raises(InvalidInput, match="expected 16-d"):
        store.ensure_collection("v1", 16)
    with pytest.raises(InvalidInput, match="expected a vector of 8 floats"):
        store.upsert("v1", [VectorPoint("p9", "i", [1.0, 2.0])])
    with pytest.raises(NotFound, match="no collection"):
        store.upsert("v9", [VectorPoint("p9", "i", unit(1))])


def test_filters_each_exclude_what_they_should(store: VectorStore) -> None:
    load_catalogue(store)
    assert found(store) == ["p1", "p2", "p3", "p4"]  # ordered by similarity
    assert found(store, SearchFilters(categories=["dress"])) == ["p1", "p2"]
    assert found(store, SearchFilters(categories=["tee", "skirt"])) == ["p3", "p4"]
    assert found(store, SearchFilters(attributes_all=["floral", "maxi"])) == ["p1", "p3"]
    assert found(store, SearchFilters(min_price=30, max_price=100)) == ["p1", "p4"]
    assert found(store, SearchFilters(min_price=100)) == ["p2"]
    assert found(store, SearchFilters(in_stock_only=True)) == ["p1", "p2", "p4"]
    assert found(
        store, SearchFilters(categories=["dress"], attributes_all=["maxi"], max_price=60, in_stock_only=True)
    ) == ["p1"]
    assert found(store, exclude_product_id="p1") == ["p2", "p3", "p4"]
    assert found(store, SearchFilters(categories=["coat"])) == []
    with pytest.raises(InvalidInput, match="min_price <= max_price"):
        found(store, SearchFilters(min_price=10, max_price=5))
    with pytest.raises(InvalidInput, match="top_k"):
        store.search("v1", unit(1), top_k=0)
    with pytest.raises(InvalidInput, match="expected finite floats"):
        store.search("v1", np.full(DIM, np.nan), top_k=1)


def test_results_are_grouped_by_product_with_the_best_image(store: VectorStore) -> None:
    store.ensure_collection("v1", DIM)
    # "many" has 30 images, all closer to the query than any other product: a plain top-k would be all "many".
    points = [VectorPoint("many", f"img{i}", unit(1, 0.01 * (i + 1)), {"category": "dress"}) for i in range(30)]
    points += [VectorPoint(f"other{j}", "img0", unit(1, 0.5 + j), {"category": "dress"}) for j in range(3)]
    points += [VectorPoint("other0", "img1", unit(1, 2.0, 1), {"category": "dress"})]
    store.upsert("v1", points)
    hits = store.search("v1", unit(1), top_k=3)
    assert [h.product_id for h in hits] == ["many", "other0", "other1"]
    assert hits[0].image_id == "img0"  # the closest of its 30 images
    assert hits[1].image_id == "img0"
    assert hits[0].score == pytest.approx(float(unit(1) @ unit(1, 0.01)), abs=1e-5)
    assert hits[0].score > hits[1].score > hits[2].score
    assert hits[0].payload["category"] == "dress" and hits[0].payload["model_version"] == "v1"
    assert len(store.search("v1", unit(1), top_k=10)) == 4


def test_grouping_equals_the_exhaustive_grouping_of_all_points(store: VectorStore) -> None:
    """Random catalogue, 3 images per product: every answer equals the exhaustive grouping; then a query whose
    first 40 points are one product (more than one fetch round on Edge) still gets its top_k distinct products."""
    rng = np.random.default_rng(7)
    dim = 16
    store.ensure_collection("v9", dim)
    vectors = rng.standard_normal((300, dim)).astype(np.float32)
    store.upsert("v9", [VectorPoint(f"p{i // 3}", f"i{i}", v) for i, v in enumerate(vectors)])
    normalised = vectors / np.linalg.norm(vectors, axis=1, keepdims=True)

    def exhaustive(query: np.ndarray, k: int) -> list[str]:
        order = np.argsort(-(normalised @ (query / np.linalg.norm(query))), kind="stable")
        return list(dict.fromkeys(f"p{i // 3}" for i in order))[:k]

    for query in rng.standard_normal((30, dim)).astype(np.float32):
        assert [h.product_id for h in store.search("v9", query, top_k=10)] == exhaustive(query, 10)

    crowd = np.eye(dim, dtype=np.float32)[0] * 100  # far out along e0: its 40 images outrank everything else
    store.upsert("v9", [VectorPoint("crowd", f"c{i}", crowd + i * np.eye(dim, dtype=np.float32)[-1])
                        for i in range(40)])
    hits = store.search("v9", crowd, top_k=5)
    assert hits[0].product_id == "crowd" and len({h.product_id for h in hits}) == 5
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


def test_replace_product_keeps_only_the_new_images(store: VectorStore) -> None:
    load_catalogue(store)
    store.upsert("v1", [VectorPoint("p1", "old", unit(1, 0.05), CATALOGUE["p1"][0])])
    store.replace_product("v1", "p1", [VectorPoint("p1", "new", unit(1, 0.07), CATALOGUE["p1"][0]),
                                       VectorPoint("p1", "p1-img0", unit(1, 0.1), CATALOGUE["p1"][0])])
    store.replace_product("v1", "p1", [VectorPoint("p1", "new", unit(1, 0.07), CATALOGUE["p1"][0])])  # replayed
    assert store.count("v1") == len(CATALOGUE)
    assert store.existing_point_ids("v1", [point_id("p1", i, "v1") for i in ("old", "new", "p1-img0")]) == {
        point_id("p1", "new", "v1")}
    assert store.search("v1", unit(1), top_k=1)[0].image_id == "new"


def test_alias_swap_is_atomic_for_readers(store: VectorStore) -> None:
    assert store.alias_target() is None
    load_catalogue(store, "v1")
    load_catalogue(store, "v2")
    store.set_alias("v1")
    assert store.alias_target() == "v1"

    stop = threading.Event()
    sizes: list[int] = []
    versions: set[str] = set()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                hits = store.search(SERVING_ALIAS, unit(1), top_k=4)
                sizes.append(len(hits))
                versions.update(h.payload["model_version"] for h in hits)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        for i in range(20):
            store.set_alias("v2" if i % 2 == 0 else "v1")
            seen = len(sizes)  # let the reader search at least once per alias state
            deadline = time.monotonic() + 5
            while len(sizes) <= seen and not errors and time.monotonic() < deadline:
                time.sleep(0.001)
    finally:
        stop.set()
        thread.join(timeout=10)
    assert not errors, errors
    assert sizes and min(sizes) == 4, "a reader must always see a full result from one version"
    assert versions == {"v1", "v2"}, "the reader should have searched both versions"
    assert len(sizes) >= 20
    assert store.alias_target() == "v1"
    with pytest.raises(NotFound):
        store.set_alias("v404")
    with pytest.raises(InvalidInput, match="served by alias"):
        store.drop_collection("v1")
    assert store.drop_collection("v2") is True
    assert store.drop_collection("v2") is False


def test_edge_alias_record_survives_reopening_and_a_crash_mid_write(tmp_path: Path) -> None:
    path = tmp_path / "qdrant"
    first = open_store(path)
    assert isinstance(first, EdgeStore)
    load_catalogue(first, "2024.06/best")
    first.set_alias("2024.06/best")
    load_catalogue(first, "v2")
    first.close()
    # What a crash can leave: a torn temporary alias record (the rename never happened) and a collection
    # whose creation stopped before its meta.json was written.
    (path / f".{ALIASES_FILE}.tmp").write_text('{"products": "products_v')
    (path / "collections" / "products_half").mkdir()
    reopened = open_store(path)
    try:
        assert reopened.alias_target() == "2024.06/best"
        assert reopened.count(SERVING_ALIAS) == len(CATALOGUE)
        assert reopened.list_versions() == ["2024.06/best", "v2"]
        assert not (path / "collections" / "products_half").exists()
        reopened.set_alias("v2")
        assert not (path / f".{ALIASES_FILE}.tmp").exists()
    finally:
        reopened.close()
    again = open_store(path)
    try:
        assert again.alias_target() == "v2"
    finally:
        again.close()


def _wait_until(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout}s waiting for {what}"
        time.sleep(0.05)


def _indexed(store: EdgeStore, name: str) -> int:
    with store._lock.read():  # as the store's own readers: never while a build is swapped in
        return store._shards[name].info().indexed_vectors_count


def test_edge_builds_hnsw_in_the_background_once_enough_points_wait(tmp_path: Path) -> None:
    store = EdgeStore(tmp_path / "edge", index_after_points=200, quantize_int8=True)
    try:
        rng = np.random.default_rng(3)
        vectors = rng.standard_normal((600, 32)).astype(np.float32)
        store.ensure_collection("v1", 32)
        store.upsert("v1", [VectorPoint(f"p{i // 2}", f"i{i}", v, {"in_stock": i % 4 < 2}) for i, v in
                            enumerate(vectors)])  # returns at once: the build runs in a child process
        name = collection_name("v1")
        _wait_until(lambda: _indexed(store, name) > 0, 60, "the background build")
        query = vectors[5]
        hits = store.search("v1", query, top_k=10, filters=SearchFilters(in_stock_only=True))
        assert hits[0].product_id == "p2" and all(h.payload["in_stock"] is True for h in hits)
        assert len({h.product_id for h in hits}) == 10
        assert store.count("v1") == 600
    finally:
        store.close()


def test_edge_index_build_serves_meanwhile_and_keeps_the_writes_made_during_it(tmp_path: Path) -> None:
    """Edge's own build holds the interpreter lock; built in a child process, searches and writes go on, and
    the writes made meanwhile are replayed onto the built copy before it is swapped in."""
    path = tmp_path / "edge"
    store = EdgeStore(path, index_after_points=1000)  # the shard indexes segments past 1,000 points...
    rng = np.random.default_rng(5)
    vectors = rng.standard_normal((20_000, 32)).astype(np.float32)
    store.ensure_collection("v1", 32)
    store.index_after_points = 1 << 40  # ...but the store starts no build of its own: this test starts it
    store.upsert("v1", [VectorPoint(f"p{i}", "a", v, {"in_stock": True}) for i, v in enumerate(vectors)],
                 batch_size=2000)
    name = collection_name("v1")
    build = threading.Thread(target=store.optimize, args=("v1",))
    build.start()
    _wait_until(lambda: name in store._journals, 30, "the build to start")
    searched = journaled = 0
    written: list[str] = []
    while name in store._journals:  # the child is building
        assert store.search("v1", vectors[searched % 100], top_k=5)[0].product_id == f"p{searched % 100}"
        searched += 1
        if len(written) < 20:
            product = f"new{len(written)}"
            store.upsert("v1", [VectorPoint(product, "a", vectors[len(written)] * -1, {"in_stock": False})])
            store.delete_product("v1", f"p{19_999 - len(written)}")
            journaled = max(journaled, len(store._journals.get(name, [])))
            written.append(product)
    build.join(60)
    assert searched > 0 and journaled > 0, (searched, journaled)
    shard_folder = store._meta[name]["shard"]
    assert shard_folder != "shard" and _indexed(store, name) > 0
    assert store.count("v1") == 20_000
    for n, product in enumerate(written):
        assert store.search("v1", vectors[n] * -1, top_k=1)[0].product_id == product
        assert store.search("v1", vectors[19_999 - n], top_k=1)[0].product_id != f"p{19_999 - n}"
    store.close()
    # A crash mid-build leaves an unnamed copy: removed on open; the built shard is the one reopened.
    (path / "collections" / name / "shard-deadbeef").mkdir()
    reopened = EdgeStore(path)
    try:
        assert not (path / "collections" / name / "shard-deadbeef").exists()
        assert reopened._meta[name]["shard"] == shard_folder and reopened.count("v1") == 20_000
    finally:
        reopened.close()


def test_a_local_mode_store_is_migrated_to_edge_on_open(tmp_path: Path) -> None:
    from qdrant_client import QdrantClient

    from shared.vectorstore.qdrant import ServerStore

    path = tmp_path / "qdrant"
    old = ServerStore(QdrantClient(path=str(path)))  # what the previous local default wrote
    load_catalogue(old, "v1")
    load_catalogue(old, "v2")
    old.set_alias("v2")
    old.close()

    migrated = open_store(path)
    try:
        assert isinstance(migrated, EdgeStore)
        assert migrated.alias_target() == "v2" and migrated.list_versions() == ["v1", "v2"]
        assert migrated.count("v1") == len(CATALOGUE)
        assert found(migrated, SearchFilters(in_stock_only=True)) == ["p1", "p2", "p4"]
        load_catalogue(migrated, "v1")  # same deterministic ids: a replay after migration adds nothing
        assert migrated.count("v1") == len(CATALOGUE)
    finally:
        migrated.close()
    assert (tmp_path / "qdrant.local-mode" / "meta.json").exists()

    # A crash between the two final renames leaves the new store under .migrating: opening finishes the job.
    path.rename(tmp_path / "qdrant.migrating")
    finished = open_store(path)
    try:
        assert finished.alias_target() == "v2"
    finally:
        finished.close()


def test_delete_product_removes_its_points(store: VectorStore) -> None:
    load_catalogue(store)
    store.upsert("v1", [VectorPoint("p1", "p1-img1", unit(1, 0.05), CATALOGUE["p1"][0])])
    assert store.count("v1") == len(CATALOGUE) + 1
    store.delete_product("v1", "p1")
    assert store.count("v1") == len(CATALOGUE) - 1
    assert "p1" not in found(store)
    with pytest.raises(NotFound, match="p1"):
        store.get_vector("v1", "p1")
    store.delete_product("v1", "p1")  # deleting again is harmless
    store.delete_product("v-missing", "p1")


def test_get_vector_is_the_normalised_mean_of_the_product_images(store: VectorStore) -> None:
    store.ensure_collection("v1", DIM)
    store.upsert(
        "v1",
        [VectorPoint("p", "a", unit(1, 0)), VectorPoint("p", "b", unit(0, 1)), VectorPoint("q", "a", unit(0, 0, 1))],
    )
    vector = store.get_vector("v1", "p")
    np.testing.assert_allclose(vector, unit(1, 1), atol=1e-6)
    hits = store.search("v1", vector, top_k=5, exclude_product_id="p")
    assert [h.product_id for h in hits] == ["q"]
