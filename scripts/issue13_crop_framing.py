"""Issue 13 study: query crop framing (fill) vs per-garment retrieval, evaluation only, one detection pass.

Usage: PYTHONPATH=. python scripts/issue13_crop_framing.py OUTFITS_DIR CHECKPOINT OUT.json [FILLS, e.g. 1.0,0.85]
Gallery stays framed as the shop photo (FRAME_FILL); only the shopper-photo query crop changes.
Also reports the detected share under other matching rules (diagnostic only, the protocol is unchanged).
"""

import json
import sys
from pathlib import Path

import numpy as np

from shared.detection.crop import square_crop
from shared.detection.metrics import iou
from shared.training import metrics
from shared.training.outfit_eval import KS, _matched, _pixels, held_out

data, ckpt, out = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
fills = [float(f) for f in sys.argv[4].split(",")] if len(sys.argv) > 4 else [1.0, 0.85, 0.75, 0.7, 0.65, 0.6, 0.55]
h = held_out(data, ckpt)
queries, ids, gallery, gallery_ids = h.queries, h.ids, h.gallery, h.gallery_ids
matched = [(k, _matched(g, im, ds)) for k, (_, g, im, ds) in enumerate(queries)]
matched = [(k, d) for k, d in matched if d is not None]
share = len(matched) / len(queries)
res: dict = {"queries": len(queries), "gallery": len(h.shops), "detected_share": share}


def share_at(threshold: float, same_class: bool) -> float:
    hits = [_matched(g, im, ds, threshold, same_class=same_class) is not None for _, g, im, ds in queries]
    return sum(hits) / len(queries)


res["share"] = {f"t{t}_{'cls' if c else 'any'}": share_at(t, c) for t in (0.1, 0.2, 0.3) for c in (True, False)}
ious = [iou(_pixels(d, queries[k][2]), queries[k][1].box) for k, d in matched]
res["matched_iou_mean"] = float(np.mean(ious))
sides = []
for k, d in matched:
    g, im = queries[k][1], queries[k][2]
    x1, y1, x2, y2 = _pixels(d, im)
    sides.append(max(x2 - x1, y2 - y1) / max(g.box[2] - g.box[0], g.box[3] - g.box[1]))
res["det_side_over_gt_side_median"] = float(np.median(sides))
mids = ids[[k for k, _ in matched]]
embs = {}
for fill in fills:
    truth = h.embed([square_crop(im, g.box, fill=fill) for _, g, im, _ in queries])
    det = h.embed([square_crop(queries[k][2], _pixels(d, queries[k][2]), fill=fill) for k, d in matched])
    embs[fill] = (truth, det)
    gt = metrics.retrieval_topk(truth, ids, gallery, gallery_ids, ks=KS)["topk"]
    dt = metrics.retrieval_topk(det, mids, gallery, gallery_ids, ks=KS)["topk"]
    gtm = metrics.retrieval_topk(truth[[k for k, _ in matched]], mids, gallery, gallery_ids, ks=KS)["topk"]
    res[f"fill{fill}"] = {"gt_top1": gt[1], "gt_top20": gt[20], "det_top1": dt[1] * share, "det_top20": dt[20] * share,
                          "det_top20_matched_only": dt[20], "gt_top20_matched_only": gtm[20]}
    print(fill, res[f"fill{fill}"], flush=True)
# test-time average of two framings
for a, b in [(0.85, 0.7), (0.85, 0.65), (0.75, 0.6)]:
    if a in embs and b in embs:
        t = embs[a][0] + embs[b][0]
        d = embs[a][1] + embs[b][1]
        gt = metrics.retrieval_topk(t, ids, gallery, gallery_ids, ks=KS)["topk"]
        dt = metrics.retrieval_topk(d, mids, gallery, gallery_ids, ks=KS)["topk"]
        res[f"avg{a}+{b}"] = {"gt_top1": gt[1], "gt_top20": gt[20], "det_top1": dt[1] * share,
                              "det_top20": dt[20] * share}
print(json.dumps(res, indent=1))
Path(out).write_text(json.dumps(res, indent=1))
