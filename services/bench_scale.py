"""`fashion bench scale`: FindSimilar at catalogue sizes (20k-300k images) on the embedded vector store.

Catalogue vectors are real FashionNet embeddings of the synthetic in-shop catalogue's shop images, spread into N
images: product p starts from base embedding p mod M, moves by an item jitter (cosine ~0.9 to its base, so items
sharing a base are near neighbours, as look-alike products are), and each of its 3 images by an image jitter
(cosine ~0.95 to its item). Query photos are the catalogue's real consumer photos, so neighbourhoods and query
distribution look like real ones rather than HNSW's worst case of uniform random vectors. Every figure is a ratio
to one query embedding (the Embed RPC, interleaved with FindSimilar over the same channel), measured in one run.

Latency is measured twice after the store's process starts: a first pass over other photos (`cold_*`: a fresh
process, nothing of the store touched yet: Edge reads payloads and graph pages for the first time), then the
reported pass over the query photos (a store that has served a while, as in production).
"""

from __future__ import annotations

import json
import multiprocessing
import resource
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
from PIL import Image
from rich.console import Console
from rich.table import Table

from fashion.v1 import common_pb2, search_pb2
from services.bench import _catalogue, _embed, _stubs, default_checkpoint
from services.resources import ResourceSettings
from services.stack import MODEL_TARGETS, Stack, StackSettings
from shared.config import GrpcServerSettings, ModelSettings
from shared.data.deepfashion import load_benchmark
from shared.data.synth import CATEGORIES
from shared.db.session import fresh_stores
from shared.vectorstore import SearchFilters, VectorPoint, VectorStore, open_store

IMAGES_PER_PRODUCT = 3
ITEM_JITTER, IMAGE_JITTER = 0.48, 0.33  # noise norms: cosine 1/sqrt(1+s^2) = 0.90 and 0.95 to the centre
STOREFRONT = SearchFilters(categories=[CATEGORIES[0].name], max_price=40.0, in_stock_only=True)
TOP_K = 20


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)


def catalogue_vectors(base: np.ndarray, images: int, seed: int = 0) -> np.ndarray:
    """`images` unit vectors, IMAGES_PER_PRODUCT consecutive ones per product, around the real `base` ones."""
    rng = np.random.default_rng(seed)
    products = -(-images // IMAGES_PER_PRODUCT)
    dim = base.shape[1]
    items = _unit(base[np.arange(products) % len(base)]
                  + ITEM_JITTER * _unit(rng.standard_normal((products, dim), dtype=np.float32)))
    noise = _unit(rng.standard_normal((products * IMAGES_PER_PRODUCT, dim), dtype=np.float32))
    return _unit(np.repeat(items, IMAGES_PER_PRODUCT, axis=0) + IMAGE_JITTER * noise)[:images]


def catalogue_payloads(products: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed + 1)
    return {"category": rng.integers(0, len(CATEGORIES), products), "price": rng.uniform(5, 200, products).round(2),
            "in_stock": rng.random(products) < 0.8}


def exact_top(vectors: np.ndarray, payloads: dict[str, np.ndarray], query: np.ndarray,
              filters: SearchFilters | None) -> list[str]:
    """Exact top-k products (best image each) by brute force: the reference for recall."""
    padded = np.full(-(-len(vectors) // IMAGES_PER_PRODUCT) * IMAGES_PER_PRODUCT, -np.inf, dtype=np.float32)
    padded[: len(vectors)] = vectors @ query
    scores = padded.reshape(-1, IMAGES_PER_PRODUCT).max(axis=1)
    if filters is not None:
        allowed = (payloads["category"] == 0) & (payloads["price"] <= filters.max_price) & payloads["in_stock"]
        scores = np.where(allowed, scores, -np.inf)
    order = np.argsort(-scores)[:TOP_K]
    return [f"p{i}" for i in order if np.isfinite(scores[i])]


def load(store: VectorStore, version: str, vectors: np.ndarray, payloads: dict[str, np.ndarray],
         batch: int = 2000) -> tuple[float, float]:
    """Upsert the catalogue, then build its index: (points/s of the upserts, seconds of the index build)."""
    store.ensure_collection(version, vectors.shape[1])
    deferred = getattr(store, "index_after_points", None)
    if deferred is not None:
        store.index_after_points = 1 << 62  # type: ignore[attr-defined]  # one build at the end, not one per 20k
    start = time.perf_counter()
    for first in range(0, len(vectors), batch):
        points = []
        for i in range(first, min(first + batch, len(vectors))):
            p = i // IMAGES_PER_PRODUCT
            points.append(VectorPoint(f"p{p}", f"p{p}-{i % IMAGES_PER_PRODUCT}", vectors[i], {
                "title": f"product {p}", "category": CATEGORIES[payloads["category"][p]].name,
                "attributes": [], "price": float(payloads["price"][p]), "in_stock": bool(payloads["in_stock"][p]),
                "brand": "", "currency": "EUR", "image_uri": ""}))
        store.upsert(version, points, batch_size=batch)
    upsert_per_s = len(vectors) / (time.perf_counter() - start)
    start = time.perf_counter()
    store.optimize(version)
    if deferred is not None:
        store.index_after_points = deferred  # type: ignore[attr-defined]
    return upsert_per_s, time.perf_counter() - start


def _rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_cold(path: str) -> tuple[float, float]:
    """In a fresh process: seconds to open the store and answer a first query, and the memory (MB) that added to
    the process (RSS after minus before: the interpreter and its imports are not the store's)."""
    before = _rss_mb()
    start = time.perf_counter()
    store = open_store(path)
    version = store.alias_target()
    assert version is not None
    store.search(version, store.get_vector(version, "p0"), TOP_K)
    seconds = time.perf_counter() - start
    grown = _rss_mb() - before
    store.close()
    return seconds, grown


def _find(stub, data: bytes, filters: search_pb2.Filters | None) -> float:  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    stub.FindSimilar(search_pb2.FindSimilarRequest(image=common_pb2.ImageInput(data=data), top_k=TOP_K,
                                                   filters=filters), timeout=30)
    return time.perf_counter() - start


def client_interleaved(address: str, paths: list[str]) -> dict[str, list[float]]:
    """Per query photo, back to back over one channel: FindSimilar, FindSimilar with the storefront filter, Embed."""
    payloads = [Path(p).read_bytes() for p in paths]
    search, embed = _stubs(address)
    storefront = search_pb2.Filters(categories=list(STOREFRONT.categories), max_price=STOREFRONT.max_price,
                                    in_stock_only=True)
    _find(search, payloads[0], None), _embed(embed, payloads[0])  # warm-up
    times: dict[str, list[float]] = {"find": [], "filtered": [], "embed_rpc": []}
    for data in payloads:
        times["find"].append(_find(search, data, None))
        times["filtered"].append(_find(search, data, storefront))
        times["embed_rpc"].append(_embed(embed, data))
    return times


def _stack(workdir: Path, checkpoint: Path, name: str, stores=None) -> Stack:  # type: ignore[no-untyped-def]
    stores = stores or fresh_stores(workdir / name, f"fashion_{name}")
    settings = StackSettings(grpc=GrpcServerSettings(port=0),
                             resources=ResourceSettings(stores=stores, model=ModelSettings(checkpoint=checkpoint)))
    return Stack(settings, targets=(*MODEL_TARGETS, "search")).start()


def bench_size(workdir: Path, checkpoint: Path, base: np.ndarray, query_paths: list[str], warm_paths: list[str],
               query_vectors: np.ndarray, images: int, int8: bool) -> dict:
    name = f"bench_scale_{images}"
    vectors = catalogue_vectors(base, images)
    payloads = catalogue_payloads(-(-images // IMAGES_PER_PRODUCT))
    stores = fresh_stores(workdir / name, f"fashion_{name}").model_copy(update={"qdrant_int8": int8})
    stack = _stack(workdir, checkpoint, name, stores)
    try:
        store = stack.resources.store()
        version = stack.runtime.get().version
        upsert_per_s, index_s = load(store, version, vectors, payloads)
        store.set_alias(version)
        recall = {}
        for label, filters in (("all", None), ("storefront", STOREFRONT)):
            shares = []
            for q in query_vectors:
                exact = set(exact_top(vectors, payloads, q, filters))
                got = {h.product_id for h in store.search(version, q, TOP_K, filters=filters)}
                shares.append(len(got & exact) / max(1, len(exact)))
            recall[label] = float(np.mean(shares))
    finally:
        stack.stop()
    spawn = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(1, mp_context=spawn) as cold:
        startup_s, store_rss_mb = cold.submit(open_cold, str(stores.data_dir / "qdrant")).result()
    stack = _stack(workdir, checkpoint, name, stores)
    try:
        with ProcessPoolExecutor(1, mp_context=spawn) as client:
            cold = client.submit(client_interleaved, stack.address, warm_paths).result()
            times = client.submit(client_interleaved, stack.address, query_paths).result()
    finally:
        stack.stop()
    embed = statistics.median(times["embed_rpc"])
    q = {k: np.percentile(v, [50, 95]) for k, v in times.items()}
    cold_embed = statistics.median(cold["embed_rpc"])
    c = {k: np.percentile(v, [50, 95]) for k, v in cold.items()}
    return {"images": images, "upsert_per_s": upsert_per_s, "index_s": index_s, "startup_s": startup_s,
            "store_rss_mb": store_rss_mb, "embed_rpc_p50_ms": embed * 1e3,
            "p50_ms": q["find"][0] * 1e3, "p95_ms": q["find"][1] * 1e3,
            "filtered_p50_ms": q["filtered"][0] * 1e3, "filtered_p95_ms": q["filtered"][1] * 1e3,
            "p50_ratio": q["find"][0] / embed, "p95_ratio": q["find"][1] / embed,
            "filtered_p50_ratio": q["filtered"][0] / embed, "filtered_p95_ratio": q["filtered"][1] / embed,
            "recall_at_20": recall["all"], "filtered_recall_at_20": recall["storefront"],
            "cold_p50_ratio": c["find"][0] / cold_embed, "cold_p95_ratio": c["find"][1] / cold_embed,
            "cold_filtered_p50_ratio": c["filtered"][0] / cold_embed,
            "cold_filtered_p95_ratio": c["filtered"][1] / cold_embed}


def bench_scale(workdir: Path, *, sizes: list[int], queries: int = 100, items: int = 300, int8: bool = False,
                checkpoint: Path | None = None, json_path: Path | None = None,
                console: Console | None = None) -> dict:
    console = console or Console()
    checkpoint = checkpoint or default_checkpoint(workdir / "bench-model" / "model.pt")
    root = _catalogue(workdir, "inshop", items)
    bench = load_benchmark(root, "inshop")
    stack = _stack(workdir, checkpoint, "bench_scale_base")
    try:  # the real embeddings every size is built from, and the query photos' own (for recall)
        model = stack.runtime.get()
        shop = [bench.path(r) for r in bench.split("gallery")]
        base = np.concatenate([np.stack([a.embedding for a in model.analyze(
            [Image.open(p).convert("RGB") for p in shop[i:i + 32]])]) for i in range(0, len(shop), 32)])
        photos = [str(bench.path(r)) for r in bench.split("query")]
        query_paths = photos[:queries]
        # The first pass's photos: the next ones, else shop photos (a small catalogue has few consumer photos).
        warm_paths = (photos[queries:2 * queries] + [str(p) for p in shop])[:queries]
        query_vectors = np.stack([a.embedding for a in model.analyze(
            [Image.open(p).convert("RGB") for p in query_paths])])
    finally:
        stack.stop()
    rows = []
    for images in sizes:
        rows.append(bench_size(workdir, checkpoint, base, query_paths, warm_paths, query_vectors, images, int8))
        console.print(f"{images} images done: {json.dumps({k: round(v, 3) for k, v in rows[-1].items()})}")
    table = Table(title=f"fashion bench scale: FindSimilar over gRPC on Qdrant Edge, top_k {TOP_K}, {len(query_paths)} "
                        f"query photos, {len(base)} real base embeddings{', int8 HNSW' if int8 else ''}")
    columns = ("images", "upsert/s", "index s", "start-up s", "store RSS MB", "Embed RPC p50 ms", "p50 ms (ratio)",
               "p95 ms (ratio)", "filtered p50 ms (ratio)", "filtered p95 ms (ratio)", "recall@20", "filtered recall",
               "first pass p50 / p95 ratio")
    for column in columns:
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["images"]), f"{r['upsert_per_s']:,.0f}", f"{r['index_s']:.1f}", f"{r['startup_s']:.2f}",
                      f"{r['store_rss_mb']:.0f}", f"{r['embed_rpc_p50_ms']:.1f}",
                      *(f"{r[k + '_ms']:.1f} ({r[k + '_ratio']:.2f}x)" for k in ("p50", "p95", "filtered_p50",
                                                                                  "filtered_p95")),
                      f"{r['recall_at_20']:.3f}", f"{r['filtered_recall_at_20']:.3f}",
                      f"{r['cold_p50_ratio']:.2f}x / {r['cold_p95_ratio']:.2f}x")
    # 13 columns: at a pipe's default 80 every cell was cut to three characters.
    Console(width=max(console.width, 220), file=console.file).print(table)
    result = {"int8": int8, "sizes": rows}
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
    return result
