"""Seconds per retraining step (services/retrain/finetune.py's docstring): `finetune` on a synthetic click log.

usage: OMP_NUM_THREADS=2 .venv/bin/python scripts/retrain_step_time.py [--unfreeze embedding] [--distill 1.0]
       [--items 40] [--input-size 96] [--epochs 3] [--threads 2] [--pixels]

A synthetic consumer-to-shop folder (var/bench/retrain-steps, generated once), an ImageNet-initialised FashionNet
at --input-size serving it, every consumer photo searched once with its true item clicked among 8 shown, and
one run's `finetune` on a throwaway SQLite database: 16 pairs x (photo + positive + 2 negatives) = 64 images a
step, as in the docstring's table. --pixels forces the backbone on every row every step (the path before the
feature cache). Prints the one-off feature phase, the median s/step and the whole `finetune` wall time.
"""

from __future__ import annotations

import argparse
import hashlib
import inspect
import logging
import statistics
import tempfile
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import torch

from services.retrain import finetune as ft
from services.retrain.config import RetrainConfig
from services.retrain.pairs import ImageBank, build_pairs, usable_pairs
from shared.config import ImageSettings
from shared.data.deepfashion import load_benchmark
from shared.data.synth import ATTRIBUTES, CATEGORIES, generate
from shared.db import make_engine, repository, session_factory, sqlite_url, upgrade
from shared.fashionnet import default_metadata
from shared.fashionnet.checkpoint import build_model
from shared.vocabulary import Attribute, Category, ClothesType

DATA = Path("var/bench/retrain-steps")
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--unfreeze", default="embedding")
    parser.add_argument("--distill", type=float, default=1.0)
    parser.add_argument("--items", type=int, default=40)
    parser.add_argument("--input-size", type=int, default=96)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--pixels", action="store_true")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("services.retrain.finetune").setLevel(logging.INFO)  # the feature pass's summary
    root = DATA / f"{args.items}items"
    if not (root / "Eval" / "list_eval_partition.txt").is_file():
        generate("consumer2shop", root, args.items, seed=7, image_size=args.input_size, workers=1, progress=False)
    bench = load_benchmark(root, "consumer2shop")
    torch.manual_seed(0)
    meta = default_metadata("fashionnet_efficientnet_lite0",
                            [Category(c.name, ClothesType(c.clothes_type)) for c in CATEGORIES],
                            [Attribute(name, group) for name, group in ATTRIBUTES],
                            version="bench-1", input_size=args.input_size)
    model = build_model(meta, pretrained=True).eval()
    with tempfile.TemporaryDirectory() as tmp:
        url = sqlite_url(Path(tmp) / "fashion.db")
        upgrade(url)
        sessions = session_factory(make_engine(url))
        items = sorted({r.item_id for r in bench.records})
        rng = np.random.default_rng(0)
        with sessions.begin() as s:
            for item in items:
                repository.upsert_product(s, item, title=item)
            for r in bench.records:
                if r.domain == "shop":
                    repository.upsert_image(s, hashlib.sha1(r.image.encode()).hexdigest(), r.item_id,
                                            uri=str(bench.path(r).resolve()), domain="shop")
            for i, r in enumerate(x for x in bench.records if x.domain == "consumer"):
                shown = [p for p in rng.permutation(items) if p != r.item_id][:7]
                shown.insert(int(rng.integers(8)), r.item_id)
                query_id = str(uuid.uuid4())
                repository.record_query(s, query_id, model_version="bench-1", top_k=8,
                                        query_image=bench.path(r).read_bytes(),
                                        impressions=[{"position": p, "product_id": pid, "score": 1 - p / 10}
                                                     for p, pid in enumerate(shown)],
                                        created_at=T0 + timedelta(minutes=i))
                repository.record_click(s, str(uuid.uuid4()), query_id, r.item_id, shown.index(r.item_id),
                                        clicked_at=T0 + timedelta(minutes=i, seconds=5))
        config = RetrainConfig(epochs=args.epochs, batch_pairs=16, negatives_per_pair=2, min_pairs=10,
                               unfreeze=args.unfreeze, distill=args.distill)
        with sessions.begin() as s:
            run_id = repository.create_or_get_active_run(s, "bench", epochs=config.epochs, config=config.to_dict(),
                                                         base_version="bench-1")[0].run_id
        with sessions() as s:
            split = build_pairs(s, min_pairs=config.min_pairs)
        bank = ImageBank(sessions, meta.input_size, ImageSettings().image_intake())
        pairs = usable_pairs(split.train, bank)
        ticks: list[tuple[float, ft.Progress]] = []
        extra = {"cached_features": False} if args.pixels else {}
        if "cache_dir" in inspect.signature(ft.finetune).parameters:
            extra["cache_dir"] = Path(tmp) / "cache"
        start = time.monotonic()
        ft.finetune(run_id, sessions=sessions, model=model, metadata=meta, base_version="bench-1", pairs=pairs,
                    bank=bank, config=config, run_dir=Path(tmp) / "run", device=torch.device("cpu"),
                    progress_cb=lambda p: ticks.append((time.monotonic(), p)), progress_bar=False, **extra)
        total = time.monotonic() - start
    steps = [(t, p) for t, p in ticks if p.steps > 0]
    gaps = [b[0] - a[0] for a, b in zip(steps, steps[1:], strict=False) if a[1].epoch == b[1].epoch]
    first = steps[0][0] - start
    print(f"unfreeze={args.unfreeze} distill={args.distill} pixels={args.pixels}: {len(pairs)} pairs, "
          f"{len(steps)} steps; until the first step ended {first:.2f} s; median s/step "
          f"{statistics.median(gaps):.4f}; finetune {total:.1f} s")


if __name__ == "__main__":
    main()
