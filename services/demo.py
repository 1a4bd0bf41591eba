"""`make demo`: the whole product on one machine, measured through the live system.

Synthesise a consumer-to-shop catalogue -> train FashionNet if no checkpoint is at hand -> start every
service -> publish the shop catalogue through Kafka -> wait until it is indexed -> query every held-out
consumer photo through gRPC FindSimilar -> print top-1/top-20 -> write an HTML page -> stop cleanly.
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import grpc
from rich.console import Console
from rich.table import Table
from tqdm.auto import tqdm

from fashion.v1 import common_pb2, search_pb2, search_pb2_grpc
from services.ingest.publish import events_from_folder, publish
from services.resources import ResourceSettings
from services.search.client import write_html
from services.stack import Stack, StackSettings
from services.state_file import DEMO_STACK_DIRNAME
from shared.config import GrpcServerSettings, ImageSettings, ModelSettings, StoreSettings
from shared.data.deepfashion import load_benchmark
from shared.db import repository
from shared.db.session import DEFAULT_POSTGRES_URL, database_url_or_fallback, fresh_stores
from shared.errors import FashionError
from shared.fashionnet.checkpoint import imagenet_baseline_checkpoint
from shared.training.quickstart import ensure_benchmark, ensure_checkpoint

BENCHMARK = "consumer2shop"
# The trained model's stores stay after the demo, for `fashion up --demo`; the baseline's are the demo's own.
SERVED, BASELINE = (DEMO_STACK_DIRNAME, "fashion_demo"), ("stack-imagenet", "fashion_demo_imagenet")


def demo_stores(workdir: Path) -> StoreSettings:
    """The stores the demo left its trained model and catalogue in (`fashion up --demo` opens them)."""
    state, database = workdir / SERVED[0], SERVED[1]
    if not (state / "qdrant").exists():
        raise FashionError(f"expected the stores `make demo` writes under {state}: run `make demo` first")
    url = database_url_or_fallback(DEFAULT_POSTGRES_URL.rsplit("/", 1)[0] + f"/{database}", state / "fashion.db")
    return StoreSettings(data_dir=state, database_url=url)


def wait_until_indexed(stack: Stack, expected_products: int, timeout_s: float = 600.0, poll_s: float = 0.5) -> int:
    """Poll Postgres until every published product is indexed, with a progress bar."""
    from sqlalchemy import func, select

    from shared.db.models import Product

    deadline = time.monotonic() + timeout_s
    with tqdm(total=expected_products, desc="indexed", unit="product") as bar:
        while True:
            with stack.sessions() as session:
                done = session.scalar(select(func.count()).select_from(Product).where(Product.deleted.is_(False)))
            bar.update(done - bar.n)
            if done >= expected_products:
                return done
            if stack.error is not None:
                raise FashionError(f"ingest failed: {stack.error}")
            if time.monotonic() > deadline:
                raise FashionError(f"expected {expected_products} products indexed within {timeout_s:.0f}s, "
                                   f"got {done}")
            time.sleep(poll_s)


def query_consumer_photos(address: str, root: Path, *, top_k: int = 20, timeout: float = 30.0):
    """FindSimilar for every held-out consumer photo; returns (hits@1, hits@top_k, n, first response)."""
    bench = load_benchmark(root, BENCHMARK)
    queries = [r for r in bench.split("test") if r.domain == "consumer"]
    top1 = topk = 0
    example = None
    with grpc.insecure_channel(address) as channel:
        stub = search_pb2_grpc.SearchServiceStub(channel)
        for record in tqdm(queries, desc="FindSimilar", unit="query"):
            data = bench.path(record).read_bytes()
            response = stub.FindSimilar(search_pb2.FindSimilarRequest(
                image=common_pb2.ImageInput(data=data, id=record.image), top_k=top_k), timeout=timeout)
            ranked = [h.product_id for h in response.hits]
            top1 += ranked[:1] == [record.item_id]
            topk += record.item_id in ranked[:top_k]
            if example is None or (ranked[:1] == [record.item_id] and example[2] is False):
                example = (data, response, ranked[:1] == [record.item_id])
    return top1, topk, len(queries), example


def demo_stack_settings(settings: StackSettings, workdir: Path) -> StackSettings:
    """`fashion up --demo`: `settings` on the demo's stores, reading its catalogue folder too."""
    images = settings.images.with_roots(*settings.images.image_intake().policy.roots, workdir / "data" / BENCHMARK)
    return replace(settings, resources=replace(settings.resources, stores=demo_stores(workdir)), images=images)


def measure_live(workdir: Path, root: Path, checkpoint: Path, *, label: str, console: Console,
                 html: Path | None = None, stores: tuple[str, str] = SERVED) -> dict:
    """Start every service on fresh stores with `checkpoint`, index the catalogue through Kafka, query every
    held-out consumer photo through FindSimilar, stop; top-1/top-20 as the storefront sees them."""
    console.rule(f"{label}: every service in one process (gRPC + Kafka broker + Postgres/SQLite + Qdrant)")
    settings = StackSettings(grpc=GrpcServerSettings(port=0),
                             resources=ResourceSettings(stores=fresh_stores(workdir / stores[0], stores[1]),
                                                        model=ModelSettings(checkpoint=checkpoint)),
                             images=ImageSettings().with_roots(root))  # the catalogue it publishes, wherever it is
    stack = Stack(settings).start()
    try:
        console.print(f"serving on {stack.address}; kafka {stack.bootstrap}; db {stack.database_url}")
        events = list(events_from_folder(root))
        start = time.monotonic()
        publish(stack.bootstrap, events, total=len(events))
        wait_until_indexed(stack, len(events))
        with stack.sessions() as session:
            images = repository.count_catalog_images(session)
        ingest_s = time.monotonic() - start
        console.print(f"indexed {len(events)} products / {images} shop images in {ingest_s:.1f}s "
                      f"({images / ingest_s:.1f} images/s end to end)")
        top1, top20, n, example = query_consumer_photos(stack.address, root)
        if html is not None and example is not None:
            write_html(html, example[0], example[1], intake=settings.images.image_intake())
    finally:
        stack.stop()
    return {"top1": top1 / n, "top20": top20 / n, "queries": n, "products": len(events)}


def run_demo(workdir: Path, *, items: int = 300, input_size: int = 224, checkpoint: Path | None = None,
             console: Console | None = None) -> dict:
    """Train (unless a checkpoint is given), then measure the trained model and the ImageNet baseline through
    the live system on the same catalogue; print them side by side and write `results.json`."""
    console = console or Console()
    started = time.monotonic()
    root = workdir / "data" / BENCHMARK
    ensure_benchmark(root, BENCHMARK, items, console=console)
    checkpoint = checkpoint or ensure_checkpoint(root, workdir / "runs" / "demo", input_size=input_size,
                                                 console=console, cache_dir=workdir / "trunk-cache")
    baseline = imagenet_baseline_checkpoint(checkpoint, workdir / "runs" / "imagenet" / "model.pt")
    html = workdir / "search.html"
    trained = measure_live(workdir, root, checkpoint, label="trained FashionNet", console=console, html=html)
    imagenet = measure_live(workdir, root, baseline, label="ImageNet baseline", console=console, stores=BASELINE)
    seconds = time.monotonic() - started
    table = Table(title=f"consumer-to-shop retrieval through the live system ({trained['queries']} held-out "
                        f"consumer photos, {trained['products']} catalogue products)")
    for column in ("model", "top-1", "top-20", "checkpoint"):
        table.add_column(column)
    table.add_row("FashionNet (trained)", f"{trained['top1']:.3f}", f"{trained['top20']:.3f}", str(checkpoint))
    table.add_row("ImageNet features", f"{imagenet['top1']:.3f}", f"{imagenet['top20']:.3f}", str(baseline))
    console.print(table)
    results = {"trained": {"top1": trained["top1"], "top20": trained["top20"]},
               "imagenet": {"top1": imagenet["top1"], "top20": imagenet["top20"]},
               "queries": trained["queries"], "products": trained["products"], "seconds": round(seconds, 1),
               "checkpoint": str(checkpoint)}
    (workdir / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    console.print(f"example result page: {html}; figures in {workdir / 'results.json'} ({seconds:.0f}s)")
    console.print("next: `fashion up --demo` serves this catalogue with the trained model, and the web console "
                  "on http://127.0.0.1:8080")
    return {**results, "html": str(html)}
