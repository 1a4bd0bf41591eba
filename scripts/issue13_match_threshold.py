"""Issue 13 study: per-garment retrieval if the matching (= serving) score threshold were 0.3, 0.2 or 0.1.

Usage: PYTHONPATH=. python scripts/issue13_match_threshold.py OUTFITS_DIR CHECKPOINT OUT.json FILLS (e.g. 0.85)
"""
import json
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from shared.data.outfits import load_outfits
from shared.detection.crop import FRAME_FILL, square_crop
from shared.detection.metrics import iou
from shared.fashionnet.checkpoint import load_checkpoint
from shared.training import metrics
from shared.training.outfit_eval import KS, _pixels, detect, embed

data, ckpt, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
fills = [float(f) for f in sys.argv[4].split(",")]
bench = load_outfits(data)
photos = [p for p in bench.split("test") if p.domain == "consumer"]
shops = [p for p in bench.split("test") if p.domain == "shop"]
model, meta = load_checkpoint(ckpt)
size, mean, std = meta.input_size, meta.mean, meta.std
images = [Image.open(bench.path(p)).convert("RGB") for p in photos]
found = detect(model, images, size, mean, std)
gallery = embed(model, [square_crop(Image.open(bench.path(p)).convert("RGB"), p.garments[0].box, fill=FRAME_FILL)
                        for p in shops], size, mean, std)
gallery_ids = np.array([p.match_key(p.garments[0]) or "" for p in shops])
queries = [(p, g, im, ds) for p, im, ds in zip(photos, images, found, strict=True) for g in p.garments]
ids = np.array([p.match_key(g) or "" for p, g, _, _ in queries])
res: dict = {"queries": len(queries), "gallery": len(shops), "photos": len(photos)}


def match(g, im, ds, t):
    best, best_iou = None, 0.5
    for d in ds:
        if d.score < t:
            continue
        o = iou(_pixels(d, im), g.box)
        if d.garment_class == g.garment_class and o >= best_iou:
            best, best_iou = d, o
    return best


for fill in fills:
    truth = embed(model, [square_crop(im, g.box, fill=fill) for _, g, im, _ in queries], size, mean, std)
    gt = metrics.retrieval_topk(truth, ids, gallery, gallery_ids, ks=KS)["topk"]
    res[f"fill{fill}_gt"] = {"top1": gt[1], "top20": gt[20]}
    for t in (0.3, 0.2, 0.1):
        m = [(k, match(g, im, ds, t)) for k, (_, g, im, ds) in enumerate(queries)]
        m = [(k, d) for k, d in m if d is not None]
        share = len(m) / len(queries)
        det = embed(model, [square_crop(queries[k][2], _pixels(d, queries[k][2]), fill=fill) for k, d in m],
                    size, mean, std)
        dt = metrics.retrieval_topk(det, ids[[k for k, _ in m]], gallery, gallery_ids, ks=KS)["topk"]
        per_photo = np.mean([sum(d.score >= t for d in ds) for ds in found])
        truths = np.mean([len(p.garments) for p in photos])
        res[f"fill{fill}_t{t}"] = {"share": share, "top1": dt[1] * share, "top20": dt[20] * share,
                                   "detections_per_photo": float(per_photo), "garments_per_photo": float(truths)}
        print(fill, t, res[f"fill{fill}_t{t}"], res[f"fill{fill}_gt"], flush=True)
Path(out).write_text(json.dumps(res, indent=1))
print("done")
