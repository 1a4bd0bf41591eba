"""The vector store against qdrant-client's local mode on disk (the local default; production uses a server)."""

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
    open_client,
    point_id,
)
from shared.vectorstore.client import tune_local_persistence

DIM = 8


def unit(*values: float) -> np.ndarray:
    vector = np.zeros(DIM, dtype=np.float32)
    vector[: len(values)] = values
    return vector / np.linalg.norm(vector)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[VectorStore]:
    client = open_client(str(tmp_path / "qdrant"))
    try:
        yield VectorStore(client)
    finally:
        client.close()


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


def test_local_overfetch_learns_the_depth_and_still_widens_when_a_query_needs_more(store: VectorStore) -> None:
    """Random catalogue, 3 images per product: every answer equals the exhaustive grouping of all points, while
    the fetch size adapts; then a query whose first 40 points are one product still gets its top_k."""
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
    learnt = store._depth[collection_name("v9")]
    assert 1.0 <= learnt < 4.0  # fewer candidates per product than the initial OVERFETCH

    crowd = np.eye(dim, dtype=np.float32)[0] * 100  # far out along e0: its 40 images outrank everything else
    store.upsert("v9", [VectorPoint("crowd", f"c{i}", crowd + i * np.eye(dim, dtype=np.float32)[-1])
                        for i in range(40)])
    hits = store.search("v9", crowd, top_k=5)
    assert hits[0].product_id == "crowd" and len({h.product_id for h in hits}) == 5


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


def test_alias_survives_reopening_a_local_store(tmp_path: Path) -> None:
    path = str(tmp_path / "qdrant")
    client = open_client(path)
    first = VectorStore(client)
    load_catalogue(first, "2024.06/best")
    first.set_alias("2024.06/best")
    client.close()
    client = open_client(path)
    try:
        reopened = VectorStore(client)
        assert reopened.alias_target() == "2024.06/best"
        assert reopened.count(SERVING_ALIAS) == len(CATALOGUE)
    finally:
        client.close()


def test_local_collections_commit_in_wal_mode_and_keep_their_points(tmp_path: Path) -> None:
    import sqlite3

    path = tmp_path / "qdrant"
    client = open_client(str(path))
    load_catalogue(VectorStore(client), "v1")
    client.close()
    (database,) = path.glob("collection/*/storage.sqlite")
    with sqlite3.connect(database) as connection:  # WAL is a property of the file: it outlives the connection
        assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    client = open_client(str(path))
    try:
        assert VectorStore(client).count("v1") == len(CATALOGUE)
        assert tune_local_persistence(client, collection_name("v1"))
        assert not tune_local_persistence(client, "no-such-collection")
    finally:
        client.close()


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
