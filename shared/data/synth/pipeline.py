"""``generate``: plan every photo, render items in a process pool, then write the benchmark's files.

Plans, splits and item specs are drawn in the parent from keyed generators; workers only render. Each image's
randomness comes from (seed, benchmark, item, photo), so the output is byte-identical for any worker count.
"""

from __future__ import annotations

import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.data.synth.catalog import (
    BENCHMARKS,
    STREAM_PHOTO,
    STREAM_PLAN,
    STREAM_SPLIT,
    ItemSpec,
    rng_for,
    sample_item,
)
from shared.data.synth.outfit_pipeline import generate_outfits
from shared.data.synth.photos import PhotoPlan, PhotoResult, render_photo
from shared.data.synth.render import render_layers
from shared.data.synth.writer import (
    Photo,
    item_id,
    write_attributes,
    write_consumer2shop,
    write_inshop,
    write_landmarks,
)
from shared.errors import InvalidInput

MIN_IMAGE_SIZE = 64
_VIEW_INDEX = {"front": 1, "side": 2, "back": 3, "full": 4, "additional": 7}


@dataclass(frozen=True)
class SynthSummary:
    benchmark: str
    root: Path
    items: int
    images: int
    seconds: float

    @property
    def images_per_second(self) -> float:
        return self.images / self.seconds if self.seconds > 0 else float("inf")


@dataclass(frozen=True)
class _Task:
    seed: int
    benchmark: str
    item: ItemSpec
    plans: tuple[PhotoPlan, ...]
    names: tuple[str, ...]
    root: str
    size: int


def generate(
    benchmark: str,
    out: str | Path,
    items: int,
    seed: int = 0,
    *,
    image_size: int = 256,
    workers: int | None = None,
    progress: bool = True,
) -> SynthSummary:
    """Write a synthetic DeepFashion benchmark (images + published annotation files) under ``out``.

    ``outfits`` writes DeepFashion2's layout instead (shared/data/synth/outfit_pipeline.py).
    """
    if benchmark not in BENCHMARKS:
        raise InvalidInput(f"expected benchmark one of {', '.join(BENCHMARKS)}, got {benchmark!r}")
    if items < 1:
        raise InvalidInput(f"expected items >= 1, got {items}")
    if image_size < MIN_IMAGE_SIZE:
        raise InvalidInput(f"expected image_size >= {MIN_IMAGE_SIZE}, got {image_size}")
    if workers is not None and workers < 1:
        raise InvalidInput(f"expected workers >= 1, got {workers}")
    if benchmark == "outfits":
        done, images, seconds = generate_outfits(out, items, seed, image_size=image_size, workers=workers,
                                                 progress=progress)
        return SynthSummary(benchmark, Path(out), done, images, seconds)
    start = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    specs = [sample_item(seed, benchmark, i) for i in range(items)]
    tasks = []
    for spec in specs:
        plans, names = plan_photos(benchmark, seed, spec)
        tasks.append(_Task(seed, benchmark, spec, plans, names, str(root), image_size))
    total = sum(len(t.plans) for t in tasks)

    workers = min(workers or os.cpu_count() or 1, items)
    results: list[list[PhotoResult]] = []
    with tqdm(total=total, desc=f"synth {benchmark}", unit="img", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                results.append(_render_item(task))
                bar.update(len(task.plans))
        else:
            chunk = max(1, min(16, items // (workers * 8)))
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for task, res in zip(tasks, pool.imap(_render_item, tasks, chunksize=chunk), strict=True):
                    results.append(res)
                    bar.update(len(task.plans))

    photos = [
        Photo(name, task.item, plan.domain, res)
        for task, res_list in zip(tasks, results, strict=True)
        for plan, name, res in zip(task.plans, task.names, res_list, strict=True)
    ]
    _assign_splits(benchmark, seed, photos, items)
    if benchmark == "inshop":
        write_inshop(root, photos, items)
    elif benchmark == "consumer2shop":
        write_consumer2shop(root, photos)
    elif benchmark == "attributes":
        write_attributes(root, photos)
    else:
        write_landmarks(root, photos)
    return SynthSummary(benchmark, root, items, len(photos), time.perf_counter() - start)


def _render_item(task: _Task) -> list[PhotoResult]:
    """Worker: render every photo of one item and write the JPEGs; return their annotations."""
    views = tuple({"back" if p.view == "back" else "front" for p in task.plans})
    layers = render_layers(task.item, task.size, views)
    results = []
    for index, (plan, name) in enumerate(zip(task.plans, task.names, strict=True)):
        rng = rng_for(task.seed, task.benchmark, STREAM_PHOTO, task.item.index, index)
        data, result = render_photo(task.item, layers, plan, task.size, rng)
        path = Path(task.root) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        results.append(result)
    return results


def plan_photos(benchmark: str, seed: int, item: ItemSpec) -> tuple[tuple[PhotoPlan, ...], tuple[str, ...]]:
    """Which photos an item gets and their file names, in each benchmark's naming scheme."""
    rng = rng_for(seed, benchmark, STREAM_PLAN, item.index)
    cat = item.spec
    if benchmark == "inshop":
        count = int(rng.integers(3, 6))
        views = ["front", "side", "back"]
        if count == 4:
            views.append(str(rng.choice(["full", "additional"])))
        elif count == 5:
            views += ["full", "additional"]
        group = int(rng.integers(1, 5))
        folder = f"img/{item.gender}/{item.folder}/{item_id(item.index)}"
        plans = tuple(PhotoPlan("shop", v) for v in views)
        return plans, tuple(f"{folder}/{group:02d}_{_VIEW_INDEX[v]}_{v}.jpg" for v in views)
    if benchmark == "consumer2shop":
        shops, consumers = int(rng.integers(1, 4)), int(rng.integers(1, 4))
        extra = rng.choice(["side", "back", "full", "additional"], size=2, replace=False)
        views = ["front", *[str(v) for v in extra]][:shops]
        folder = f"img/{cat.c2s[0]}/{cat.c2s[1]}/{item_id(item.index)}"
        plans = tuple(PhotoPlan("shop", v) for v in views) + tuple(
            PhotoPlan("consumer", "consumer") for _ in range(consumers)
        )
        shop_names = tuple(f"{folder}/shop_{k + 1:02d}.jpg" for k in range(shops))
        # "comsumer" sic: the released dataset spells its consumer photos this way, and loaders expect it.
        consumer_names = tuple(f"{folder}/comsumer_{k + 1:02d}.jpg" for k in range(consumers))
        names = shop_names + consumer_names
        return plans, names
    consumer_share = 0.5 if benchmark == "attributes" else 0.6
    if rng.random() < consumer_share:
        plan = PhotoPlan("consumer", "consumer")
    else:
        plan = PhotoPlan(
            "shop", str(rng.choice(["front", "side", "back", "full", "additional"], p=[0.5, 0.15, 0.1, 0.15, 0.1]))
        )
    if benchmark == "attributes":
        return (plan,), (f"img/{item.title()}/img_{item.index + 1:08d}.jpg",)
    return (plan,), (f"img/img_{item.index + 1:08d}.jpg",)


def _split_sizes(n: int, val: float, test: float) -> tuple[int, int]:
    """(n_val, n_test) with at least one of each once there are three or more units to split."""
    n_val = max(1, round(val * n)) if n >= 3 else 0
    n_test = max(1, round(test * n)) if n >= 2 else 0
    return n_val, n_test


def _assign_splits(benchmark: str, seed: int, photos: list[Photo], items: int) -> None:
    order = rng_for(seed, benchmark, STREAM_SPLIT).permutation(items)
    if benchmark == "inshop":
        test_items = set(order[items // 2 :].tolist())
        by_item: dict[int, list[Photo]] = {}
        for p in photos:
            by_item.setdefault(p.item.index, []).append(p)
        for index, group in by_item.items():
            if index not in test_items:
                for p in group:
                    p.split = "train"
                continue
            shuffled = rng_for(seed, benchmark, STREAM_SPLIT, index + 1).permutation(len(group))
            queries = max(1, len(group) // 2)
            for rank, k in enumerate(shuffled):
                group[k].split = "query" if rank < queries else "gallery"
        return
    val, test = (0.1, 0.3) if benchmark == "consumer2shop" else (0.15, 0.15)
    n_val, n_test = _split_sizes(items, val, test)
    split = np.full(items, "train", dtype=object)
    split[order[:n_val]] = "val"
    split[order[n_val : n_val + n_test]] = "test"
    for p in photos:
        p.split = str(split[p.item.index])
