"""`fashion publish DIR`: a DeepFashion benchmark folder, or a plain folder of images, -> catalogue events.

A DeepFashion retrieval benchmark becomes one upsert per item id with all its shop images (In-shop: every
image; Consumer-to-shop: only `shop` images, since consumer photos are queries, not catalogue). The
benchmarks carry no titles, brands or prices, so those are derived from a hash of the item id: the same
folder always yields the same events. Event ids are content hashes too (see `content_event_id`):
publishing an unchanged folder again is skipped by the worker; pass a new `revision` to force a re-index.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path

from tqdm import tqdm

from fashion.v1 import events_pb2
from services.ingest.events import (
    DEFAULT_EVENT_LIMITS,
    UPLOADS_TOPIC,
    EventLimits,
    build_upsert_event,
    content_event_id,
    event_to_json,
)
from shared.data.deepfashion import PARTITION, load_benchmark
from shared.data.folder import has_product_folders
from shared.data.records import Benchmark, ImageRecord
from shared.errors import InvalidInput
from shared.imaging import IntakePolicy

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
BRANDS = ("Atelier Nord", "Blue Harbor", "Cinder & Co", "Dune Studio", "Elm Street", "Fjord", "Grey Lark",
          "Hollow Pine", "Indigo Row", "Juniper")
CURRENCY = "EUR"


def _hash(text: str, salt: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{salt}\x1f{text}".encode()).digest()[:8], "big")


def synthetic_fields(product_id: str) -> dict[str, object]:
    """Brand, price (9.99-199.99), currency and stock (90% in stock), derived deterministically from the id."""
    return {"brand": BRANDS[_hash(product_id, "brand") % len(BRANDS)],
            "price": round(9.99 + (_hash(product_id, "price") % 19001) / 100, 2),
            "currency": CURRENCY, "in_stock": _hash(product_id, "stock") % 10 != 0}


def _finish(event: events_pb2.CatalogEvent, revision: str) -> events_pb2.CatalogEvent:
    event.event_id = content_event_id(event, revision)
    return event


def _benchmark_events(benchmark: Benchmark, revision: str, limits: EventLimits) -> Iterator[events_pb2.CatalogEvent]:
    groups: dict[str, list[ImageRecord]] = {}
    for record in benchmark.records:
        if benchmark.name == "consumer2shop" and record.domain != "shop":
            continue
        product_id = record.item_id or Path(record.image).with_suffix("").as_posix().replace("/", "_")
        groups.setdefault(product_id, []).append(record)
    for product_id in sorted(groups):
        records = sorted(groups[product_id], key=lambda r: r.image)
        paths = list(dict.fromkeys(benchmark.path(r).resolve() for r in records))
        if len(paths) > limits.max_images:
            log.warning("item %s has %d shop images; publishing the first %d", product_id, len(paths),
                        limits.max_images)
            paths = paths[: limits.max_images]
        category = next((benchmark.categories[r.category].name for r in records
                         if r.category is not None and r.category < len(benchmark.categories)), "")
        title = f"{category or 'Item'} {product_id}"
        event = build_upsert_event(product_id, paths, title=title, category_hint=category, event_id="pending",
                                   limits=limits, **synthetic_fields(product_id))  # type: ignore[arg-type]
        yield _finish(event, revision)


def _image_folder_events(root: Path, revision: str, limits: EventLimits) -> Iterator[events_pb2.CatalogEvent]:
    files = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise InvalidInput(f"{root}: expected a DeepFashion benchmark folder ({PARTITION}) or a folder of "
                           f"{'/'.join(sorted(s.lstrip('.') for s in IMAGE_SUFFIXES))} images, found neither")
    stems = [p.stem for p in files]
    for path in files:
        # The file stem is the product id, unless two files share it (then the relative path disambiguates).
        product_id = path.stem if stems.count(path.stem) == 1 else \
            path.relative_to(root).with_suffix("").as_posix().replace("/", "__")
        title = path.stem.replace("_", " ").replace("-", " ").strip().title() or product_id
        event = build_upsert_event(product_id, [path.resolve()], title=title, event_id="pending", limits=limits,
                                   **synthetic_fields(product_id))  # type: ignore[arg-type]
        yield _finish(event, revision)


def events_from_folder(path: str | Path, *, revision: str = "",
                       limits: EventLimits = DEFAULT_EVENT_LIMITS) -> Iterator[events_pb2.CatalogEvent]:
    """Upsert events for a DeepFashion benchmark folder or a folder of images (see the module docstring)."""
    root = Path(path).expanduser()
    if not root.is_dir():
        raise InvalidInput(f"{root}: expected a folder (a DeepFashion benchmark or images)")
    if (root / PARTITION).is_file():
        yield from _benchmark_events(load_benchmark(root), revision, limits)
    elif has_product_folders(root) and not any(p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
                                                for p in root.iterdir()):
        # ROOT/PRODUCT_ID/*.jpg: one product per folder, its shop photos (consumer photos are left out).
        yield from _benchmark_events(load_benchmark(root, "folder"), revision, limits)
    else:
        yield from _image_folder_events(root, revision, limits)


def publish(
    bootstrap: str,
    events: Iterable[events_pb2.CatalogEvent],
    *,
    topic: str = UPLOADS_TOPIC,
    partitions: int = 3,
    progress: bool = True,
    total: int | None = None,
    timeout_s: float = 30.0,
) -> int:
    """Produce `events` as JSON to `topic` (key = product id, so one product stays in order); returns how many.

    Creates the topic when missing. Returns after every message was acknowledged (raises otherwise).
    """
    from shared.messaging import ensure_topics, make_producer

    ensure_topics(bootstrap, {topic: partitions})
    producer = make_producer(bootstrap, client_id="fashion-publish", linger_ms=20)
    futures = []
    try:
        with tqdm(total=total, desc=f"publish {topic}", unit="event", disable=not progress) as bar:
            for event in events:
                futures.append(producer.send(topic, key=event.product.product_id.encode(),
                                             value=event_to_json(event)))
                bar.update(1)
        producer.flush(timeout=timeout_s)
        for future in futures:
            future.get(timeout=timeout_s)  # raises the send error, if any
    finally:
        producer.close(timeout=timeout_s)
    return len(futures)


def roots_error(folder: str | Path, state: dict) -> str | None:
    """Why the running `fashion up` described by `state` (stack.json) would refuse every image published from
    `folder` (its ingest reads files only under its catalogue roots), or None."""
    roots = state.get("image_roots")
    if "ingest" not in state.get("targets", ()) or roots is None:
        return None
    if IntakePolicy(roots=tuple(Path(r) for r in roots)).under_roots(folder):
        return None
    where = ", ".join(roots) or "none: FASHION_IMAGE_ROOTS is empty"
    return (f"{folder}: expected a folder under the catalogue roots the running `fashion up` reads images from "
            f"({where}); start it with FASHION_IMAGE_ROOTS={Path(folder).resolve()} (or a folder above it), or "
            "from a working directory above the folder")


def publish_folder(bootstrap: str, path: str | Path, *, revision: str = "", topic: str = UPLOADS_TOPIC,
                   partitions: int = 3, progress: bool = True) -> int:
    """What `fashion publish DIR` runs: `events_from_folder` then `publish`, with a known total for the bar."""
    events = list(events_from_folder(path, revision=revision))
    return publish(bootstrap, events, topic=topic, partitions=partitions, progress=progress, total=len(events))
