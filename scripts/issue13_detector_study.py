"""Issue 13: which detector recipe reaches AP@0.5 >= 0.90? Heads trained on the same cached stride-16 maps, scored
on the held-out test split's shopper photos (view 0: the picture serving sees), one row per variant.

    PYTHONPATH=. python scripts/issue13_detector_study.py DATA OUT.json VARIANT[,VARIANT...] [--views V] [--seed S]

A variant is `name` or `name:key=value:key=value` over DetectorConfig's fields and the head's `width`. Prints AP@0.5
per class, the share of garments matched (same class, IoU >= 0.5) over serving's threshold 0.3, class required and
class ignored, why the rest are missed, and what the detections over 0.3 that match nothing are.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
import torch

from shared.data.outfits import load_outfits
from shared.detection.decode import DEFAULT_THRESHOLD, decode_maps
from shared.detection.head import GarmentHead
from shared.detection.metrics import iou
from shared.fashionnet.checkpoint import build_model, default_metadata
from shared.training.detector import DetectorConfig, cached_targets, detector_cache_key, fit_head
from shared.training.outfit_eval import _matched, _pixels, detection_ap, detections_per_photo
from shared.training.trunk_cache import TrunkCache, build_cache

ARCH = "fashionnet_efficientnet_lite0"
HEAD_KEYS = {"width"}


class _Size:
    """A test photo's size where the evaluation's helpers read an image's width and height."""

    def __init__(self, size: tuple[int, int]) -> None:
        self.width, self.height = size


def _features(bench, records, model, metadata, views, cache_dir):
    key = detector_cache_key(model, metadata.architecture, metadata.input_size, views)
    entries, digests = build_cache(bench, records, model.backbone, cache=TrunkCache(cache_dir, key), views=views,
                                   input_size=metadata.input_size, mean=metadata.mean, std=metadata.std,
                                   desc=f"caching {views} view(s)")
    return entries, digests


def _matched_share(photos, sizes, found, *, class_required: bool) -> float:
    """The evaluation's matching rule at serving's threshold (`_matched`), as a share of the garments."""
    hits = [_matched(g, size, dets, same_class=class_required) is not None
            for p, size, dets in zip(photos, sizes, found, strict=True) for g in p.garments]
    return sum(hits) / max(len(hits), 1)


def _misses(photos, sizes, found) -> dict:
    """Garments no same-class detection (any score) overlaps by IoU >= 0.5, by cause: a same-class box at IoU
    0.3-0.5 (localisation), another class's box at IoU >= 0.5 (class confusion), or neither (missed)."""
    out = {"garments": 0, "recall_any_score": 0, "localisation": 0, "class_confusion": 0, "missed": 0}
    for p, size, dets in zip(photos, sizes, found, strict=True):
        boxes = [(_pixels(d, size), d.garment_class) for d in dets]
        for g in p.garments:
            out["garments"] += 1
            same = max((iou(b, g.box) for b, c in boxes if c == g.garment_class), default=0.0)
            other = max((iou(b, g.box) for b, c in boxes if c != g.garment_class), default=0.0)
            key = ("recall_any_score" if same >= 0.5 else "localisation" if same >= 0.3
                   else "class_confusion" if other >= 0.5 else "missed")
            out[key] += 1
    return {k: (v / out["garments"] if k != "garments" else v) for k, v in out.items()}


def _false_positives(photos, sizes, found, threshold: float = DEFAULT_THRESHOLD) -> dict:
    """Detections over ``threshold`` that match no garment (AP's rule, by score), per photo and by kind: a second
    box on a garment its class already matched (duplicate), a box on a garment of another class (wrong class),
    a same-class box at IoU 0.1-0.5 (poor box), or none of these (background)."""
    out = {"detections": 0, "true": 0, "duplicate": 0, "wrong_class": 0, "poor_box": 0, "background": 0}
    for p, size, dets in zip(photos, sizes, found, strict=True):
        used = set()
        for d in sorted(dets, key=lambda d: -d.score):
            if d.score < threshold:
                continue
            out["detections"] += 1
            box = _pixels(d, size)
            scored = [(iou(box, g.box), k, g) for k, g in enumerate(p.garments)]
            same = [(o, k) for o, k, g in scored if g.garment_class == d.garment_class]
            best = max(same, default=(0.0, -1))
            if best[0] >= 0.5 and best[1] not in used:
                used.add(best[1])
                out["true"] += 1
            elif best[0] >= 0.5:
                out["duplicate"] += 1
            elif any(o >= 0.5 for o, _, g in scored if g.garment_class != d.garment_class):
                out["wrong_class"] += 1
                truth = max((o, g.garment_class) for o, _, g in scored if g.garment_class != d.garment_class)[1]
                pair = f"{truth}->{d.garment_class}"
                out[pair] = out.get(pair, 0) + 1
            elif best[0] >= 0.1:
                out["poor_box"] += 1
            else:
                out["background"] += 1
    n = max(len(photos), 1)
    return {k: v / n for k, v in out.items()}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("data", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("variants")
    parser.add_argument("--views", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache-dir", type=Path, default=Path("var/cache/trunk"))
    args = parser.parse_args()
    torch.manual_seed(args.seed)
    bench = load_outfits(args.data)
    metadata = default_metadata(ARCH, [], [], version="study")
    model = build_model(metadata, pretrained=True).eval()
    train = bench.split("train")
    test = [p for p in bench.split("test") if p.domain == "consumer"]
    entries, digests = _features(bench, train, model, metadata, args.views, args.cache_dir)
    test_entries, _ = _features(bench, test, model, metadata, 1, args.cache_dir)
    mid, tensors = cached_targets(train, entries, digests)
    test_mid = torch.from_numpy(np.stack([e.mid[0] for e in test_entries])).float()
    sizes = [_Size(e.size) for e in test_entries]
    rows = json.loads(args.out.read_text()) if args.out.exists() else []
    for spec in args.variants.split(","):
        name, *pairs = spec.split(":")
        options = dict(p.split("=", 1) for p in pairs)
        head_kw = {k: (float(v) if "." in v else int(v)) for k, v in options.items() if k in HEAD_KEYS}
        fields = {f.name: f.type for f in dataclasses.fields(DetectorConfig)}
        cfg_kw = {k: (float(v) if "." in v else int(v)) for k, v in options.items() if k in fields}
        config = dataclasses.replace(DetectorConfig(), views=args.views, seed=args.seed, **cfg_kw)
        torch.manual_seed(args.seed)
        head = GarmentHead(mid.shape[2], **head_kw)
        started = time.monotonic()
        history = fit_head(head, mid, tensors, config, progress=False)
        seconds = time.monotonic() - started
        with torch.inference_mode():
            maps = torch.cat([head(test_mid[k:k + 64]) for k in range(0, len(test_mid), 64)]).numpy()
        found = [decode_maps(m, threshold=0.05) for m in maps]
        row = {"variant": spec, "data": str(args.data), "views": args.views, "seed": args.seed,
               "train_photos": len(train), "test_photos": len(test), "train_seconds": round(seconds, 1),
               "final_loss": history[-1]["detection"], "detection": detection_ap(test, sizes, found),
               "matched_0.3": _matched_share(test, sizes, found, class_required=True),
               "matched_0.3_any_class": _matched_share(test, sizes, found, class_required=False),
               "misses": _misses(test, sizes, found), "per_photo_over_0.3": _false_positives(test, sizes, found),
               "per_photo_0.3": detections_per_photo(found, DEFAULT_THRESHOLD)}
        rows.append(row)
        args.out.write_text(json.dumps(rows, indent=1))
        d = row["detection"]
        misses = " ".join(f"{k} {v:.3f}" for k, v in row["misses"].items() if k != "garments")
        unmatched = " ".join(f"{k} {v:.2f}" for k, v in row["per_photo_over_0.3"].items())
        print(f"{spec:50s} views {args.views} AP50 {d['ap50']:.3f} ("
              + " / ".join(f"{d[k]:.3f}" for k in d if k != "ap50")
              + f") matched {row['matched_0.3']:.3f} any-class {row['matched_0.3_any_class']:.3f} "
              f"{row['per_photo_0.3']:.2f}/photo; misses: {misses}; per photo over 0.3: {unmatched}; "
              f"{seconds:.0f}s loss {row['final_loss']:.3f}", flush=True)


if __name__ == "__main__":
    main()
