"""Reading what the services left in Postgres and Qdrant, and comparing it with what the events asked for."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

from .harness import Database


@dataclass(frozen=True)
class Expected:
    """A product as the last event published for it says it must be."""

    event_id: str
    live: bool
    title: str = ""
    price: float = 0.0
    shas: frozenset[str] = frozenset()


@dataclass
class Verdict:
    """Per store: which products are lost (expected present, missing), duplicated (extra rows or points) or stale
    (present but from an older event, or still present after a delete)."""

    lost: set[str] = field(default_factory=set)
    duplicated: set[str] = field(default_factory=set)
    stale: set[str] = field(default_factory=set)

    def bad(self) -> set[str]:
        return self.lost | self.duplicated | self.stale


@dataclass
class PgProduct:
    title: str
    price: float
    deleted: bool
    images: dict[str, str] = field(default_factory=dict)  # image id -> sha256


def postgres_products(db: Database) -> dict[str, PgProduct]:
    products = {pid: PgProduct(title, float(price or 0), bool(deleted))
                for pid, title, price, deleted in db.rows("select product_id, title, price, deleted from products")}
    for pid, image_id, sha in db.rows("select product_id, image_id, sha256 from images"):
        if pid in products:
            products[pid].images[image_id] = sha
    return products


def qdrant_points(data_dir: Path) -> tuple[str | None, dict[str, list[dict]]]:
    """(collection behind the `products` alias, {collection: payloads of all its points}); open it only after the
    service that owns the folder stopped (the embedded engine is one process's)."""
    from shared.vectorstore import collection_name, open_store

    folder = data_dir / "qdrant"
    if not folder.exists():
        return None, {}
    store = open_store(folder)
    try:
        serving = store.alias_target()
        out = {collection_name(v): list(store.payloads(v).values()) for v in store.list_versions()}
        return (None if serving is None else collection_name(serving)), out
    finally:
        store.close()


def _close(a: float, b: float) -> bool:
    return abs(a - b) < 0.005


def judge_postgres(expected: dict[str, Expected], found: dict[str, PgProduct]) -> Verdict:
    verdict = Verdict()
    for pid, want in expected.items():
        have = found.get(pid)
        if not want.live:
            if have is not None and not have.deleted:
                verdict.stale.add(pid)  # a deleted product came back, or the delete never landed
            continue
        if have is None or have.deleted:
            verdict.lost.add(pid)
            continue
        shas = set(have.images.values())
        if want.shas - shas:
            verdict.lost.add(pid)
        if shas - want.shas or len(have.images) > len(shas):
            verdict.duplicated.add(pid)
        if have.title != want.title or not _close(have.price, want.price):
            verdict.stale.add(pid)
    return verdict


def judge_qdrant(expected: dict[str, Expected], found_pg: dict[str, PgProduct], alias: str | None,
                 collections: dict[str, list[dict]]) -> Verdict:
    """Points of the alias's collection against the expected images (ids through Postgres' image rows, or
    derived as ingest derives them when Postgres lost the row)."""
    from shared.catalog.indexing import image_id_for

    verdict = Verdict()
    points: dict[str, list[dict]] = defaultdict(list)
    for payload in collections.get(alias or "", []):
        points[str(payload.get("product_id"))].append(payload)
    for pid, want in expected.items():
        have = points.get(pid, [])
        if not want.live:
            if have:
                verdict.stale.add(pid)
            continue
        if not have:
            verdict.lost.add(pid)
            continue
        by_sha = {sha: image_id for image_id, sha in (found_pg[pid].images.items() if pid in found_pg else ())}
        wanted_ids = {by_sha.get(sha) or image_id_for(pid, sha) for sha in want.shas}
        ids = [str(p.get("image_id")) for p in have]
        if wanted_ids - set(ids):
            verdict.lost.add(pid)
        if set(ids) - wanted_ids or len(ids) > len(set(ids)):
            verdict.duplicated.add(pid)
        if any(p.get("title") != want.title or not _close(float(p.get("price") or 0), want.price) for p in have):
            verdict.stale.add(pid)
    return verdict
