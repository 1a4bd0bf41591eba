"""`fashion train` on outfit photos (DeepFashion2 layout): the garment detector, on cached backbone features, then
the embedding on the garments' crops.

The recipe of the rest of training, applied to the detector: the backbone's stride-16 map never changes (its
stages up to stride 16 are frozen in every recipe here), so each training photo's map is cached once per view
(shared/training/trunk_cache.py, the same cache and views) and only the small CenterNet head trains, for many
epochs in seconds each. Boxes follow each augmented view through the view's affine map (their corners, then the
axis-aligned box around them).

Then, unless turned off, the embedding learns from the outfits' consumer-to-shop pairs: every training garment's
crop (`garment_crop`, the picture serving searches) against its item's shop photos (garment_pairs.py), by
`fashion train`'s own fine-tuning from the detector's checkpoint (the data has no category, attribute or landmark
labels, so those heads are kept and distilled; the detector reads the stride-16 map, which no stage trains).
Measured (docs/RESULTS.md, issue 13): the embedding had never seen a worn garment's crop, and per-garment top-20
with ground-truth boxes rose 0.884 -> 0.932 at a cost of 0.02 on single-garment photos.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from shared.data.outfits import OutfitBenchmark, OutfitImage, is_outfits, load_outfits
from shared.detection.targets import detection_loss, encode
from shared.errors import InvalidInput
from shared.fashionnet.checkpoint import ModelMetadata, build_model, default_metadata, read_checkpoint, save_checkpoint
from shared.fashionnet.registry import backbone_of
from shared.training.garment_pairs import write_garment_pairs
from shared.training.trunk_cache import TrunkCache, build_cache, cache_key
from shared.training.views import view_params
from shared.vocabulary import GARMENT_CLASSES

log = logging.getLogger(__name__)

MIN_KEPT = 0.35  # a box the view cut down to less than this share of its area is not a target


@dataclasses.dataclass(frozen=True)
class DetectorConfig:
    views: int = 4  # the clean photo and 3 augmented views (2 views: AP@0.5 0.02-0.04 lower, docs/RESULTS.md)
    epochs: int = 16
    batch_size: int = 32
    lr: float = 2e-3
    weight_decay: float = 1e-4
    # Dropout on the cached map, as the other heads' recipe uses against overfitting; the head overfits a few
    # thousand photos, so more than the other heads' 0.3 (0.1: AP 0.76, 0.3: 0.82, 0.5: 0.84 at 1,761 photos).
    feature_dropout: float = 0.5
    seed: int = 0
    garment_embedding: bool = True  # then fine-tune the embedding on the garments' crops


def is_outfit_data(data: Path, benchmark: str | None) -> bool:
    """`--benchmark outfits`, or no benchmark named and DeepFashion2-style folders found."""
    return benchmark == "outfits" or (benchmark is None and is_outfits(data))


def view_boxes(image: OutfitImage, size: tuple[int, int], digest: str,
               view: int) -> tuple[list[tuple[float, float, float, float]], list[int]]:
    """The image's garment boxes as fractions of one cached view, with their class indices."""
    inverse = np.linalg.inv(view_params(digest, view).affine)
    boxes, classes = [], []
    for g in image.garments:
        x1, y1, x2, y2 = (g.box[0] / size[0], g.box[1] / size[1], (g.box[2] + 1) / size[0], (g.box[3] + 1) / size[1])
        corners = np.array([[x1, y1, 1], [x2, y1, 1], [x2, y2, 1], [x1, y2, 1]]) @ inverse.T
        lo, hi = corners[:, :2].min(axis=0), corners[:, :2].max(axis=0)
        clipped_lo, clipped_hi = np.clip(lo, 0, 1), np.clip(hi, 0, 1)
        area = float(np.prod(hi - lo))
        kept = float(np.prod(np.maximum(clipped_hi - clipped_lo, 0)))
        if area > 0 and kept >= MIN_KEPT * area:
            boxes.append((*clipped_lo.tolist(), *clipped_hi.tolist()))
            classes.append(GARMENT_CLASSES.index(g.garment_class))
    return boxes, classes


def cached_targets(records: list[OutfitImage], entries: list, digests: list[str]
                   ) -> tuple[torch.Tensor, tuple[torch.Tensor, ...]]:
    """The cached maps, (N, V, C, h, w) float16, and `encode`'s targets for every record's views, each (N, V, ...),
    the boxes following each view (`view_boxes`)."""
    mid = torch.from_numpy(np.stack([e.mid for e in entries]))
    h, w = mid.shape[-2:]
    views = mid.shape[1]
    targets = [[encode(*view_boxes(r, e.size, d, v), h, w) for v in range(views)]
               for r, e, d in zip(records, entries, digests, strict=True)]
    return mid, tuple(torch.from_numpy(np.stack([[t[k] for t in per] for per in targets])) for k in range(4))


def detector_cache_key(model: torch.nn.Module, architecture: str, input_size: int, views: int) -> str:
    """Keyed by the stride-16 stage alone, the only features the detector reads: phase 3 of the other heads'
    training changes the last stage, not this one, so every checkpoint of one backbone shares these entries (their
    pooled features belong to whichever last stage computed them and are never read under this key)."""
    return cache_key(model.backbone.mid, backbone_of(architecture) + "-mid", input_size, views)


def fit_head(head: torch.nn.Module, mid: torch.Tensor, targets: tuple[torch.Tensor, ...], config: DetectorConfig,
             *, progress: bool = True) -> list[dict]:
    """Train the head on cached (N, V, C, h, w) maps against `encode`'s targets (each (N, V, ...)); per-epoch loss."""
    heat, index, reg, mask = targets
    head.train()
    optimizer = torch.optim.AdamW(head.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    pairs = [(i, v) for i in range(mid.shape[0]) for v in range(mid.shape[1])]
    per_epoch = max(1, len(pairs) // config.batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * per_epoch,
                                                    pct_start=0.1)
    generator = torch.Generator().manual_seed(config.seed)
    dropout = torch.nn.Dropout(config.feature_dropout)
    history = []
    with tqdm(total=config.epochs * per_epoch, desc="training the garment detector", disable=not progress) as bar:
        for epoch in range(config.epochs):
            order = torch.randperm(len(pairs), generator=generator)
            total = 0.0
            for step in range(per_epoch):
                chosen = [pairs[int(k)] for k in order[step * config.batch_size:(step + 1) * config.batch_size]]
                i, v = torch.tensor([c[0] for c in chosen]), torch.tensor([c[1] for c in chosen])
                loss = detection_loss(head(dropout(mid[i, v].float())), heat[i, v], index[i, v], reg[i, v],
                                      mask[i, v])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                total += float(loss.detach())
                bar.update(1)
            history.append({"epoch": epoch + 1, "detection": total / per_epoch})
            bar.set_postfix_str(f"epoch {epoch + 1}/{config.epochs} loss {history[-1]['detection']:.3f}")
    head.eval()
    return history


def _model_for(init: Path | None, bench: OutfitBenchmark, version: str, architecture: str, input_size: int):
    """The init checkpoint's model with a (new or its own) detector head, or a fresh ImageNet-backbone model."""
    if init is None:
        from shared.vocabulary import Category

        categories = [Category(n, t) for n, t in sorted(bench.categories().items())]
        metadata = default_metadata(architecture, categories, [], version=version, input_size=input_size)
        metadata.detector = True
        log.warning("no --init-checkpoint: only the detector trains; the other heads stay untrained")
        return build_model(metadata, pretrained=True), metadata
    blob = read_checkpoint(init)
    parent = ModelMetadata.from_dict(blob["metadata"])
    metadata = dataclasses.replace(parent, version=version, parent_version=parent.version, detector=True, notes={},
                                   created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    model = build_model(metadata, pretrained=False)
    missing, unexpected = model.load_state_dict(blob["state_dict"], strict=False)
    if unexpected or any(not k.startswith("garment_head.") for k in missing):
        raise InvalidInput(f"expected {init} to hold a FashionNet of {parent.architecture}; "
                           f"missing {missing[:3]}, unexpected {unexpected[:3]}")
    return model, metadata


def train_outfits(data: Path, out: Path, *, init_checkpoint: Path | None, cache_dir: Path,
                  architecture: str = "fashionnet_efficientnet_lite0", input_size: int = 224,
                  config: DetectorConfig = DetectorConfig(), version: str | None = None, workers: int = 1,
                  embedding: dict[str, Any] | None = None, progress: bool = True) -> Path:
    """Train the garment detector on ``data``'s train split into a copy of the init checkpoint, then (with
    ``config.garment_embedding``) the embedding on its garments' crops; returns model.pt. ``embedding``: TrainConfig
    fields for the second part (epochs, items per batch, ...)."""
    started = time.monotonic()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(os.cpu_count() or 1)
    bench = load_outfits(data)
    records = bench.split("train")
    if not records:
        raise InvalidInput(f"expected training photos under {data}/train, found none")
    version = version or "fn-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    torch.manual_seed(config.seed)
    model, metadata = _model_for(init_checkpoint, bench, version, architecture, input_size)
    key = detector_cache_key(model, metadata.architecture, metadata.input_size, config.views)
    cache = TrunkCache(cache_dir, key)
    entries, digests = build_cache(bench, records, model.backbone,  # type: ignore[arg-type]
                                   cache=cache, views=config.views, input_size=metadata.input_size,
                                   mean=metadata.mean, std=metadata.std,
                                   workers=workers, progress=progress, desc="caching backbone features")
    phase1_s = time.monotonic() - started
    mid, targets = cached_targets(records, entries, digests)
    history = fit_head(model.garment_head, mid, targets, config, progress=progress)
    model = model.cpu().eval()
    metadata.notes = {**metadata.notes, "detector": {
        "history": history, "benchmark": "outfits", "train_images": len(records), "views": config.views,
        "epochs": config.epochs, "cache": f"{cache.dir}: {cache.stats.describe()}",
        "phase1_seconds": round(phase1_s, 1), "seconds": round(time.monotonic() - started, 1), "seed": config.seed}}
    if not config.garment_embedding:
        return save_checkpoint(out / "model.pt", model, metadata)
    detector = save_checkpoint(out / "detector.pt", model, metadata)
    try:
        return _train_garment_embedding(bench, out, detector, model.garment_head.state_dict(), metadata,
                                        cache_dir=cache_dir, workers=workers, seed=config.seed,
                                        overrides=embedding or {}, progress=progress)
    except InvalidInput as exc:  # data the detector can learn from but the embedding cannot (no shop photos...)
        log.warning("the embedding stays the init checkpoint's, not fine-tuned on garment crops: %s", exc)
        metadata.notes["garment_embedding"] = f"skipped: {exc}"
        return save_checkpoint(out / "model.pt", model, metadata)


def _train_garment_embedding(bench: OutfitBenchmark, out: Path, detector: Path, head: dict[str, torch.Tensor],
                             metadata: ModelMetadata, *, cache_dir: Path, workers: int, seed: int,
                             overrides: dict[str, Any], progress: bool) -> Path:
    """Fine-tune ``detector``'s embedding on the train split's garment crops; model.pt keeps both runs' notes and
    ``head``, the garment head ``detector`` holds."""
    from shared.training.train import TrainConfig, train

    pairs = out / "garment-pairs"
    write_garment_pairs(bench, pairs, progress=progress)
    config = TrainConfig(data=pairs, out=out / "garment-embedding", benchmark="consumer2shop",
                         architecture=metadata.architecture, input_size=metadata.input_size,
                         init_checkpoint=detector, version=metadata.version, seed=seed, cache_dir=cache_dir,
                         workers=workers, **overrides)
    intermediate = train(config, progress=progress)
    blob = read_checkpoint(intermediate)
    tuned = ModelMetadata.from_dict(blob["metadata"])
    tuned.parent_version = metadata.parent_version  # the init checkpoint's, not the intermediate detector's
    tuned.notes = {"detector": metadata.notes["detector"], "garment_embedding": tuned.notes}
    model = build_model(tuned, pretrained=False)
    model.load_state_dict(blob["state_dict"])
    # The detector is this run's, whatever the fine-tuning resumed from: a rerun of an interrupted run trains the
    # detector again, while the fine-tuning's last.pt still holds the first run's head.
    model.garment_head.load_state_dict(head)
    path = save_checkpoint(out / "model.pt", model.eval(), tuned)
    intermediate.unlink()  # the same weights as model.pt, 30 MB; last.pt stays for a rerun to resume from
    return path
