"""Issue 13 study: per-garment retrieval if the matching (= serving) score threshold were 0.3, 0.2 or 0.1.

Usage: PYTHONPATH=. python scripts/issue13_match_threshold.py OUTFITS_DIR CHECKPOINT OUT.json FILLS (e.g. 0.85)
"""
import json
import sys
from pathlib import Path

import numpy as np

from shared.detection.crop import square_crop
from shared.training import metrics
from shared.training.outfit_eval import KS, _matched, _pixels, detections_per_photo, held_out

data, ckpt, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
fills = [float(f) for f in sys.argv[4].split(",")]
h = held_out(data, ckpt)
queries, ids, gallery, gallery_ids, photos, found = h.queries, h.ids, h.gallery, h.gallery_ids, h.photos, h.found
res: dict = {"queries": len(queries), "gallery": len(h.shops), "photos": len(photos)}


for fill in fills:
    truth = h.embed([square_crop(im, g.box, fill=fill) for _, g, im, _ in queries])
    gt = metrics.retrieval_topk(truth, ids, gallery, gallery_ids, ks=KS)["topk"]
    res[f"fill{fill}_gt"] = {"top1": gt[1], "top20": gt[20]}
    for t in (0.3, 0.2, 0.1):
        m = [(k, _matched(g, im, ds, threshold=t)) for k, (_, g, im, ds) in enumerate(queries)]
        m = [(k, d) for k, d in m if d is not None]
        share = len(m) / len(queries)
        det = h.embed([square_crop(queries[k][2], _pixels(d, queries[k][2]), fill=fill) for k, d in m])
        dt = metrics.retrieval_topk(det, ids[[k for k, _ in m]], gallery, gallery_ids, ks=KS)["topk"]
        per_photo = detections_per_photo(found, t)
        truths = np.mean([len(p.garments) for p in photos])
        res[f"fill{fill}_t{t}"] = {"share": share, "top1": dt[1] * share, "top20": dt[20] * share,
                                   "detections_per_photo": float(per_photo), "garments_per_photo": float(truths)}
        print(fill, t, res[f"fill{fill}_t{t}"], res[f"fill{fill}_gt"], flush=True)
Path(out).write_text(json.dumps(res, indent=1))
print("done")
