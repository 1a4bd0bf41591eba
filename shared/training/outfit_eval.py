"""`fashion eval --benchmark outfits`: garment detection AP@0.5 and per-garment consumer-to-shop retrieval.

DeepFashion2's protocol (deepfashion2_api/PythonAPI/deepfashion2_retrieval_test.py): every garment of a held-out
shopper photo is a query; the gallery is every held-out shop photo's garment. Queries are cropped twice: by the
ground-truth box, and by a detection. Which detection: each of the photo's detections is assigned the garment it
overlaps most, and a garment's query is the highest-scoring detection assigned to it with its class; a garment
without one counts as a miss at every k (`retrieval.top{k}`). Detections are the decoder's down to AP's floor,
0.05, as a DeepFashion2 submission lists its detector's output.

What a shopper is shown is stricter, so it is reported beside it (`retrieval.served.*`): serving searches only
detections over its score threshold (FASHION_GARMENT_THRESHOLD), and a garment is found when one of those has its
class and IoU >= 0.5 with it. AP@0.5 ranks every detection down to 0.05. Crops are framed by `garment_crop`
(shared/detection/crop.py), exactly as serving crops a detected garment; a shop photo's garment is framed like the
shop photo itself (`square_crop` at FRAME_FILL), the picture serving indexes.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm.auto import tqdm

from shared.data.outfits import OutfitImage, load_outfits
from shared.detection.crop import fraction_to_pixels, garment_crop, square_crop
from shared.detection.decode import DEFAULT_THRESHOLD as SERVING_THRESHOLD
from shared.detection.decode import Detection, decode_maps
from shared.detection.metrics import average_precision, iou
from shared.errors import InvalidInput
from shared.fashionnet.checkpoint import load_checkpoint
from shared.fashionnet.preprocess import preprocess
from shared.training import metrics
from shared.vocabulary import GARMENT_CLASSES

KS = (1, 5, 10, 20)


def _batches(items: list, size: int) -> Iterator[list]:
    for start in range(0, len(items), size):
        yield items[start:start + size]


@torch.inference_mode()
def _run(model, images: list[Image.Image], size: int, mean, std, batch_size: int):
    outs = []
    for chunk in _batches(images, batch_size):
        outs.append(model(preprocess(chunk, size, mean, std)))
    return outs


def detect(model, images: list[Image.Image], size: int, mean, std, *, batch_size: int = 32,
           threshold: float = 0.05) -> list[list[Detection]]:
    if getattr(model, "garment_head", None) is None:
        raise InvalidInput("expected a checkpoint with a garment detector (train one with `fashion train --data "
                           "OUTFITS_DIR --init-checkpoint CKPT`), this one has none")
    found = []
    for out in _run(model, images, size, mean, std, batch_size):
        found += [decode_maps(m, threshold=threshold) for m in out.garment_maps.numpy()]
    return found


def embed(model, images: list[Image.Image], size: int, mean, std, *, batch_size: int = 32) -> np.ndarray:
    parts = [out.embedding.numpy() for out in _run(model, images, size, mean, std, batch_size)]
    return np.concatenate(parts) if parts else np.zeros((0, 1), np.float32)


def _pixels(det: Detection, image: Image.Image) -> tuple[float, float, float, float]:
    return fraction_to_pixels(det.box, image.width, image.height)  # type: ignore[return-value]


def detection_ap(photos: list[OutfitImage], images: list[Image.Image],
                 found: list[list[Detection]]) -> dict[str, float]:
    result = {}
    for cls in GARMENT_CLASSES:
        truths = [[g.box for g in p.garments if g.garment_class == cls] for p in photos]
        dets = [[(_pixels(d, im), d.score) for d in ds if d.garment_class == cls]
                for ds, im in zip(found, images, strict=True)]
        result[cls] = average_precision(dets, truths, 0.5)
    measured = [v for v in result.values() if not np.isnan(v)]
    return {"ap50": float(np.mean(measured)) if measured else float("nan"),
            **{f"ap50_{k}": v for k, v in result.items()}}


def _matched(garment, image: Image.Image, dets: list[Detection], threshold: float = SERVING_THRESHOLD, *,
             same_class: bool = True):
    """The detection serving would search for this garment: over serving's score threshold, same class, best IoU.
    (`threshold`: another serving threshold; `same_class=False`: any class; both for studies.)"""
    best, best_iou = None, 0.5
    for d in dets:
        if d.score < threshold:
            continue
        overlap = iou(_pixels(d, image), garment.box)
        if (d.garment_class == garment.garment_class or not same_class) and overlap >= best_iou:
            best, best_iou = d, overlap
    return best


def deepfashion2_queries(photo: OutfitImage, image: Image.Image, dets: list[Detection]) -> list[Detection | None]:
    """Each garment's query detection by DeepFashion2's rule: every detection goes to the garment it overlaps most
    (no IoU floor, first garment on a tie, as the official script's argmax); of those a garment got with its own
    class, the highest-scoring one; None where there is none."""
    chosen: list[Detection | None] = [None] * len(photo.garments)
    if not photo.garments:
        return chosen
    for d in dets:
        box = _pixels(d, image)
        k = int(np.argmax([iou(box, g.box) for g in photo.garments]))
        if d.garment_class == photo.garments[k].garment_class and (chosen[k] is None or d.score > chosen[k].score):
            chosen[k] = d
    return chosen


def detections_per_photo(found: list[list[Detection]], threshold: float) -> float:
    """How many boxes a photo gets at a serving threshold, on average: each is a crop searched and a result row."""
    return float(np.mean([sum(d.score >= threshold for d in dets) for dets in found])) if found else 0.0


@dataclass
class HeldOut:
    """A split's shopper photos with the checkpoint's detections, and its shop photos embedded as the gallery."""

    model: Any
    size: int
    mean: Any
    std: Any
    photos: list[OutfitImage]
    shops: list[OutfitImage]
    images: list[Image.Image]
    found: list[list[Detection]]
    gallery: np.ndarray
    gallery_ids: np.ndarray
    queries: list[tuple]  # (photo, garment, image, detections): every garment of every shopper photo
    ids: np.ndarray  # each query's item

    def embed(self, images: list[Image.Image], batch_size: int = 32) -> np.ndarray:
        return embed(self.model, images, self.size, self.mean, self.std, batch_size=batch_size)


def held_out(data: Path, checkpoint: str | Path, *, split: str = "test", batch_size: int = 32,
             progress: bool = False) -> HeldOut:
    bench = load_outfits(data)
    split = "validation" if split == "val" else split
    photos = [p for p in bench.split(split) if p.domain == "consumer"]
    shops = [p for p in bench.split(split) if p.domain == "shop"]
    if not photos or not shops:
        raise InvalidInput(f"expected shopper and shop photos in the {split} split of {data}, found "
                           f"{len(photos)} and {len(shops)}")
    model, meta = load_checkpoint(checkpoint)
    size, mean, std = meta.input_size, meta.mean, meta.std
    images = [Image.open(bench.path(p)).convert("RGB") for p in tqdm(photos, disable=not progress, desc="reading")]
    found = detect(model, images, size, mean, std, batch_size=batch_size)
    gallery_images = [Image.open(bench.path(p)).convert("RGB") for p in shops]
    gallery = embed(model, [square_crop(im, p.garments[0].box) for im, p in zip(gallery_images, shops, strict=True)],
                    size, mean, std, batch_size=batch_size)
    gallery_ids = np.array([p.match_key(p.garments[0]) or "" for p in shops])
    queries = [(p, g, im, ds) for p, im, ds in zip(photos, images, found, strict=True) for g in p.garments]
    ids = np.array([p.match_key(g) or "" for p, g, _, _ in queries])
    return HeldOut(model, size, mean, std, photos, shops, images, found, gallery, gallery_ids, queries, ids)


def _detected_topk(h: HeldOut, chosen: list[Detection | None], batch_size: int) -> dict[str, float]:
    """Top-k of the queries cropped by their chosen detections, over every garment (one without: a miss)."""
    found = [k for k, d in enumerate(chosen) if d is not None]
    share = len(found) / len(chosen)
    if not found:
        return {**{f"top{k}": 0.0 for k in KS}, "detected_share": 0.0}
    crops = [garment_crop(h.queries[k][2], _pixels(chosen[k], h.queries[k][2])) for k in found]  # type: ignore[arg-type]
    topk = metrics.retrieval_topk(h.embed(crops, batch_size), h.ids[found], h.gallery, h.gallery_ids, ks=KS)["topk"]
    return {**{f"top{k}": topk[k] * share for k in KS}, "detected_share": share}


def evaluate_outfits(data: Path, checkpoint: str | Path, *, split: str = "test", batch_size: int = 32,
                     threshold: float = SERVING_THRESHOLD, progress: bool = True) -> dict:
    """``threshold``: serving's score threshold (FASHION_GARMENT_THRESHOLD), for `retrieval.served`; AP and
    DeepFashion2's retrieval rank every detection regardless."""
    h = held_out(data, checkpoint, split=split, batch_size=batch_size, progress=progress)
    result: dict = {"benchmark": "outfits", "images": len(h.photos), "checkpoint": str(checkpoint),
                    "detection": detection_ap(h.photos, h.images, h.found)}
    queries, ids = h.queries, h.ids
    truth = h.embed([garment_crop(im, g.box) for _, g, im, _ in queries], batch_size)
    gt = metrics.retrieval_topk(truth, ids, h.gallery, h.gallery_ids, ks=KS)["topk"]
    chosen = [d for p, im, ds in zip(h.photos, h.images, h.found, strict=True)  # in the queries' order
              for d in deepfashion2_queries(p, im, ds)]
    served = [_matched(g, im, ds, threshold) for _, g, im, ds in queries]
    result["retrieval"] = {**_detected_topk(h, chosen, batch_size), **{f"top{k}_gt_boxes": gt[k] for k in KS},
                           "queries": len(queries), "gallery": len(h.shops),
                           "served": {**_detected_topk(h, served, batch_size), "garment_threshold": threshold,
                                      "detections_per_photo": detections_per_photo(h.found, threshold)}}
    return result
