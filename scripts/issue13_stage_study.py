"""Issue 13: does the detector gain from fine-tuning features, not just the head? A detector-owned copy of the
backbone's last K stride-16 blocks (ImageNet-initialised, BatchNorm statistics frozen) trains with the head on cached
maps of the layer before them; `freeze=1` keeps the copy fixed (the control: today's recipe, same script).

    PYTHONPATH=.:scripts python scripts/issue13_stage_study.py DATA OUT.json VARIANT[,VARIANT...] K

A variant is `name[:epochs=E][:slr=STAGE_LR][:lr=HEAD_LR][:drop=P][:bs=B][:freeze=1]`; 4 views, seed 0. Measured
(docs/RESULTS.md, issue 13, fourth session): K=1 gains +0.02 over its control at 8 epochs and nothing at 16, so
the product keeps the frozen map (no second copy of the block to run in serving).
"""
import copy
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from issue13_detector_study import _false_positives, _matched_share, _misses, _Size
from torch import nn

from shared.data.outfits import load_outfits
from shared.detection.decode import decode_maps
from shared.detection.head import GarmentHead
from shared.detection.targets import detection_loss
from shared.fashionnet.backbones import Backbone
from shared.fashionnet.checkpoint import build_model, default_metadata
from shared.training.detector import cached_targets
from shared.training.outfit_eval import detection_ap
from shared.training.trunk_cache import TrunkCache, build_cache, cache_key

VIEWS = 4


def main() -> None:
    data, out, specs, k = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3].split(","), int(sys.argv[4])
    torch.manual_seed(0)
    bench = load_outfits(data)
    meta = default_metadata("fashionnet_efficientnet_lite0", [], [], version="study")
    mid = build_model(meta, pretrained=True).eval().backbone.mid
    last = mid[-1]  # EfficientNet-Lite0's last stride-16 stage, 3 blocks
    pre = nn.Sequential(*mid[:-1], *last[:len(last) - k])
    tuned = nn.Sequential(*last[len(last) - k:])
    channels = 80 if k == len(last) else 112
    extractor = Backbone(pre, nn.Identity(), channels, channels)

    def features(records, views):
        cache = TrunkCache(Path("var/cache/trunk"), cache_key(pre, f"lite0-pre{k}", 224, views))
        return build_cache(bench, records, extractor, cache=cache, views=views, input_size=224, mean=meta.mean,
                           std=meta.std, desc=f"caching the map before the last {k} block(s), {views} view(s)")

    train = bench.split("train")
    test = [p for p in bench.split("test") if p.domain == "consumer"]
    entries, digests = features(train, VIEWS)
    test_entries, _ = features(test, 1)
    x, (heat, index, reg, mask) = cached_targets(train, entries, digests)
    test_x = torch.from_numpy(np.stack([e.mid[0] for e in test_entries])).float()
    sizes = [_Size(e.size) for e in test_entries]
    rows = json.loads(out.read_text()) if out.exists() else []
    for spec in specs:
        opts = dict(p.split("=") for p in spec.split(":")[1:])
        epochs, batch = int(opts.get("epochs", 8)), int(opts.get("bs", 32))
        stage_lr, head_lr = float(opts.get("slr", 5e-4)), float(opts.get("lr", 2e-3))
        torch.manual_seed(0)
        stage, head = copy.deepcopy(tuned), GarmentHead(112)
        for m in stage.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.eval()
        groups = [{"params": head.parameters(), "lr": head_lr}]
        if opts.get("freeze", "0") != "1":
            groups.append({"params": stage.parameters(), "lr": stage_lr})
        optimizer = torch.optim.AdamW(groups, weight_decay=1e-4)
        pairs = [(i, v) for i in range(x.shape[0]) for v in range(VIEWS)]
        per_epoch = len(pairs) // batch
        scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=[g["lr"] for g in groups],
                                                        total_steps=epochs * per_epoch, pct_start=0.1)
        generator, dropout = torch.Generator().manual_seed(0), nn.Dropout(float(opts.get("drop", 0.5)))
        started = time.time()
        head.train()
        for epoch in range(epochs):
            order, total = torch.randperm(len(pairs), generator=generator), 0.0
            for step in range(per_epoch):
                chosen = [pairs[int(j)] for j in order[step * batch:(step + 1) * batch]]
                i, v = torch.tensor([c[0] for c in chosen]), torch.tensor([c[1] for c in chosen])
                loss = detection_loss(head(dropout(stage(x[i, v].float()))), heat[i, v], index[i, v], reg[i, v],
                                      mask[i, v])
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach())
            print(f"  epoch {epoch + 1} loss {total / per_epoch:.3f} {time.time() - started:.0f}s", flush=True)
        head.eval()
        stage.eval()
        with torch.inference_mode():
            maps = torch.cat([head(stage(test_x[j:j + 64])) for j in range(0, len(test_x), 64)]).numpy()
        found = [decode_maps(m, threshold=0.05) for m in maps]
        row = {"variant": spec, "K": k, "data": str(data), "seconds": round(time.time() - started),
               "detection": detection_ap(test, sizes, found),
               "matched_0.3": _matched_share(test, sizes, found, class_required=True),
               "matched_0.3_any_class": _matched_share(test, sizes, found, class_required=False),
               "misses": _misses(test, sizes, found), "per_photo_over_0.3": _false_positives(test, sizes, found)}
        rows.append(row)
        out.write_text(json.dumps(rows, indent=1))
        print(f"{spec} K {k} AP50 {row['detection']['ap50']:.3f} matched {row['matched_0.3']:.3f} "
              f"any-class {row['matched_0.3_any_class']:.3f}", flush=True)


if __name__ == "__main__":
    main()
