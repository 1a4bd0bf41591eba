"""Short CPU training runs on the demo's consumer-to-shop data (docs/RESULTS.md, "Short runs").

usage: python scripts/short_run_ablation.py NAME '{"backbone_lr_scale": 0.0, "weights": {"triplet": 0.0}}'
(after `make demo` has generated var/demo/data/consumer2shop). Prints held-out and train-split retrieval.
"""
import json
import sys
from pathlib import Path

from shared.fashionnet.losses import LossWeights
from shared.training.evaluate import evaluate
from shared.training.train import TrainConfig, train

D = Path("var/demo/data/consumer2shop")
name = sys.argv[1]
kw = json.loads(sys.argv[2])
w = LossWeights(**kw.pop("weights", {}))
out = Path("var/exp") / name
ckpt = train(TrainConfig(data=D, out=out, benchmark="consumer2shop", input_size=160,
                         landmark_epochs=kw.pop("le", 1), epochs=kw.pop("e", 2), weights=w, **kw), progress=True)
for split in ("test", "train"):
    r = evaluate("consumer2shop", D, ckpt, progress=False, split=split)
    print(name, split, {k: round(v, 3) for k, v in r["retrieval"].items()})
