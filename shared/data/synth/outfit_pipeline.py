"""``fashion synth --benchmark outfits``: outfit photos and shop photos in DeepFashion2's layout.

Layout (as DeepFashion2 ships it): ``<split>/image/NNNNNN.jpg`` and ``<split>/annos/NNNNNN.json``, splits
``train``, ``validation``, ``test``. Each annotation is one JSON object per image with ``source`` (``user`` for a
shopper's photo, ``shop`` for a catalogue photo), ``pair_id`` (photos of one outfit and the shop photos of its
items share it) and ``item1``, ``item2``, ... per garment.

Fields that follow DeepFashion2's published format: the file layout, ``source``, ``pair_id``, ``item<k>`` keys,
and per item ``category_id``/``category_name``, ``style`` (>0: the garment has a match with the same
``pair_id`` and ``style`` in the other domain), ``bounding_box`` ``[x1, y1, x2, y2]`` in pixels, ``landmarks`` as a
flat ``[x, y, v, ...]`` list with v = 0 not labelled (here: outside the photo or not defined for the clothes
type), 1 labelled but occluded, 2 visible, and ``scale``/``occlusion``/``zoom_in``/``viewpoint`` with the
published 1-3 codes. Where they differ: categories are this project's 16 synthetic ones (DeepFashion2 has 13),
landmarks are always the 8 FashionNet slots of ``shared.vocabulary.LANDMARK_NAMES`` (DeepFashion2 has 294 points,
a set per category), ``segmentation`` is not written. Added fields: ``item_id`` (the product), ``clothes_type``
(1 upper, 2 lower, 3 full body), ``garment_class`` (the detector's class) and ``attributes`` (names).

Every item belongs to exactly one outfit; splits are drawn by outfit, so test items are never seen in training.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from shared.data.synth.catalog import STREAM_PHOTO, STREAM_PLAN, STREAM_SPLIT, ItemSpec, rng_for, sample_item
from shared.data.synth.outfits import GarmentResult, Outfit, garment_class, plan_outfits, render_outfit_photo
from shared.data.synth.photos import PhotoPlan, PhotoResult, render_photo
from shared.data.synth.render import render_layers
from shared.data.synth.writer import item_id
from shared.vocabulary import NUM_LANDMARKS, VIS_OCCLUDED, VIS_VISIBLE

BENCHMARK = "outfits"
SPLITS: tuple[str, ...] = ("train", "validation", "test")
_CONSUMER_STREAM = 1 << 20  # photo streams of outfits sit above every item index


@dataclass(frozen=True)
class _OutfitTask:
    seed: int
    specs: tuple[ItemSpec, ...]
    outfit: Outfit
    flat: tuple[bool, ...]  # one entry per consumer photo
    shop_views: tuple[tuple[str, ...], ...]  # per item
    names: tuple[str, ...]  # consumer photos, then each item's shop photos; relative to root, without suffix
    root: str
    size: int


def generate_outfits(out: str | Path, items: int, seed: int = 0, *, image_size: int = 256,
                     workers: int | None = None, progress: bool = True) -> tuple[int, int, float]:
    """Write the outfits benchmark; returns (items, images, seconds). Byte-identical for any worker count."""
    start = time.perf_counter()
    root = Path(out)
    root.mkdir(parents=True, exist_ok=True)
    specs = [sample_item(seed, BENCHMARK, i) for i in range(items)]
    outfits = plan_outfits(seed, specs)
    split = _split_outfits(seed, len(outfits))
    counters = dict.fromkeys(SPLITS, 0)
    tasks = []
    for outfit in outfits:
        rng = rng_for(seed, BENCHMARK, STREAM_PLAN, _CONSUMER_STREAM + outfit.index)
        flat = tuple(bool(rng.random() < 0.3) for _ in range(1 + int(rng.random() < 0.5)))
        views = tuple(("front",) if rng.random() < 0.5 else ("front", str(rng.choice(["side", "full"])))
                      for _ in outfit.items)
        count = len(flat) + sum(len(v) for v in views)
        first = counters[split[outfit.index]]
        counters[split[outfit.index]] += count
        names = tuple(f"{split[outfit.index]}/{{}}/{first + k + 1:06d}" for k in range(count))
        tasks.append(_OutfitTask(seed, tuple(specs[i] for i in outfit.items), outfit, flat, views, names,
                                 str(root), image_size))
    total = sum(len(t.names) for t in tasks)
    workers = min(workers or os.cpu_count() or 1, max(1, len(tasks)))
    with tqdm(total=total, desc="synth outfits", unit="img", disable=not progress) as bar:
        if workers == 1:
            for task in tasks:
                bar.update(_render_outfit(task))
        else:
            with multiprocessing.get_context("spawn").Pool(workers) as pool:
                for done in pool.imap(_render_outfit, tasks, chunksize=max(1, len(tasks) // (workers * 8))):
                    bar.update(done)
    return items, total, time.perf_counter() - start


def _split_outfits(seed: int, n: int) -> list[str]:
    order = rng_for(seed, BENCHMARK, STREAM_SPLIT).permutation(n)
    n_val = max(1, round(0.1 * n)) if n >= 3 else 0
    n_test = max(1, round(0.3 * n)) if n >= 2 else 0
    split = ["train"] * n
    for rank, index in enumerate(order.tolist()):
        if rank < n_val:
            split[index] = "validation"
        elif rank < n_val + n_test:
            split[index] = "test"
    return split


def _render_outfit(task: _OutfitTask) -> int:
    """Worker: render the items once, then the outfit's consumer photos and each item's shop photos."""
    layers = [render_layers(spec, task.size, tuple({"back" if v == "back" else "front" for v in (*views, "front")}))
              for spec, views in zip(task.specs, task.shop_views, strict=True)]
    names = iter(task.names)
    pair_id = task.outfit.index + 1
    for k, flat in enumerate(task.flat):
        rng = rng_for(task.seed, BENCHMARK, STREAM_PHOTO, _CONSUMER_STREAM + task.outfit.index, k)
        data, garments = render_outfit_photo(list(task.specs), [lay["front"] for lay in layers], task.size, rng,
                                             flat=flat)
        anno = {"source": "user", "pair_id": pair_id}
        for n, g in enumerate(garments, start=1):
            anno[f"item{n}"] = _item(task.specs[g.position], g.position, g)
        _write(task.root, next(names), data, anno)
    for position, (spec, views, lay) in enumerate(zip(task.specs, task.shop_views, layers, strict=True)):
        for v, view in enumerate(views):
            rng = rng_for(task.seed, BENCHMARK, STREAM_PHOTO, spec.index, v)
            data, result = render_photo(spec, lay, PhotoPlan("shop", view), task.size, rng)
            _write(task.root, next(names), data, {"source": "shop", "pair_id": pair_id,
                                                  "item1": _item(spec, position, result)})
    return len(task.names)


def _write(root: str, name: str, data: bytes, anno: dict) -> None:
    image = Path(root) / (name.format("image") + ".jpg")
    path = Path(root) / (name.format("annos") + ".json")
    image.parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    image.write_bytes(data)
    path.write_text(json.dumps(anno, separators=(",", ":")) + "\n", encoding="utf-8")


def _df2_landmarks(landmarks: np.ndarray, visibility: np.ndarray) -> list[int]:
    """Our (8, 2) + VIS_* codes -> DeepFashion2's flat [x, y, v]: v 2 visible, 1 occluded, 0 not labelled."""
    flat = []
    for slot in range(NUM_LANDMARKS):
        code = int(visibility[slot])
        v = 2 if code == VIS_VISIBLE else 1 if code == VIS_OCCLUDED else 0
        x, y = (int(landmarks[slot, 0]), int(landmarks[slot, 1])) if v else (0, 0)
        flat += [x, y, v]
    return flat


def _item(spec: ItemSpec, position: int, result: GarmentResult | PhotoResult) -> dict:
    shop = isinstance(result, PhotoResult)
    return {
        "category_id": spec.category + 1,
        "category_name": spec.spec.name,
        "style": position + 1,
        "bounding_box": [int(v) for v in result.bbox],
        "landmarks": _df2_landmarks(result.landmarks, result.visibility),
        "scale": 3 if shop else result.scale,
        "occlusion": 1 if shop else result.occlusion,
        "zoom_in": (2 if result.variation >= 4 else 1) if shop else result.zoom_in,
        "viewpoint": (2 if result.pose == 1 else 3) if shop else result.viewpoint,
        "item_id": item_id(spec.index),
        "clothes_type": int(spec.spec.clothes_type),
        "garment_class": garment_class(spec),
        "attributes": sorted(spec.attributes),
    }
