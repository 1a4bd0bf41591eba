"""`fashion train`: FashionNet on a frozen, cached backbone, then (optionally) its last stage fine-tuned.

Phase 1 (trunk_cache.py) runs the frozen ImageNet backbone once per training image and augmented view and
stores its stride-16 map and pooled stride-32 features. Phase 2 trains every head on that cache for many
epochs, in the paper's order: landmarks and visibility first, then all tasks jointly (landmark pooling reads
the landmark branch's own predictions on the cached stride-16 maps, so it stays the paper's local branch).
Optional phase 3 also trains the backbone's last stage (on the cached stride-16 maps) at a small learning rate.

Why this recipe (docs/RESULTS.md has the measurements): training end to end on 2 CPU cores affords a few
epochs of few identities, and BatchNorm drift plus a high backbone learning rate made FashionNet rank worse
than the ImageNet features it started from. On the cache, an epoch of the heads takes seconds, so the
metric loss sees many identities per batch (P x K, cross-domain: shopper and shop photos of each item) for
many epochs.

A run directory holds `last.pt` (model, optimiser, metric-loss state, epoch) written after every epoch, and
`model.pt`, the serving checkpoint, at the end. Rerunning with the same directory resumes from `last.pt`;
phase 1 resumes by itself, since only missing cache entries are computed.
"""

from __future__ import annotations

import copy
import dataclasses
import datetime as dt
import json
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from shared.data.deepfashion import load_benchmark
from shared.data.records import Benchmark, ImageRecord
from shared.errors import InvalidInput
from shared.fashionnet.checkpoint import (
    ModelMetadata,
    build_model,
    default_metadata,
    read_checkpoint,
    save_checkpoint,
)
from shared.fashionnet.losses import LossWeights, attribute_pos_weight, distillation_loss, total_loss
from shared.training.cached_set import CachedSet, load_cached_set
from shared.training.metric_losses import METRIC_LOSSES, MetricLoss, make_metric_loss
from shared.training.sampler import CrossDomainBatchSampler
from shared.training.trunk_cache import DEFAULT_CACHE_DIR
from shared.vocabulary import VIS_ABSENT

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train",)


@dataclass
class TrainConfig:
    data: Path
    out: Path
    benchmark: str | None = None
    architecture: str = "fashionnet_efficientnet_lite0"
    landmark_pooling: bool = True
    embedding_skip: bool = False
    embedding_neck: bool = True
    global_mid: bool = False
    garment_box: bool = False
    input_size: int = 224
    embedding_dim: int = 256
    views: int = 4  # cached views per image: the clean one plus views - 1 augmented ones
    landmark_epochs: int = 5
    epochs: int = 60
    finetune_epochs: int = 10  # phase 3: the backbone's last stage too, on the cached stride-16 maps
    items_per_batch: int = 32
    images_per_item: int = 4
    lr: float = 1e-3
    finetune_lr: float = 1e-3
    weight_decay: float = 5e-4
    feature_dropout: float = 0.3  # dropout on the cached features themselves: an augmentation against overfitting
    metric_loss: str = "softmax+triplet"  # one of METRIC_LOSSES
    margin: float | None = 0.2  # batch-hard triplet; None = soft margin
    temperature: float = 0.05  # softmax and supcon
    max_steps_per_epoch: int | None = None  # quick runs and tests
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    cache_dir: Path = DEFAULT_CACHE_DIR
    init_checkpoint: Path | None = None
    version: str | None = None
    domains: tuple[str, ...] | None = None  # e.g. ("shop",): train without consumer photos
    weights: LossWeights = field(default_factory=LossWeights)

    def __post_init__(self) -> None:
        if self.metric_loss not in METRIC_LOSSES:
            raise InvalidInput(f"expected a metric loss among {', '.join(METRIC_LOSSES)}, got {self.metric_loss!r}")
        if self.views < 1:
            raise InvalidInput(f"expected views >= 1, got {self.views}")

    @property
    def batch_size(self) -> int:
        return self.items_per_batch * self.images_per_item

    def schedule(self, has_landmarks: bool) -> list[str]:
        """One stage per epoch: landmarks first (when the data has them), then all tasks, then fine-tuning."""
        first = ["landmarks"] * self.landmark_epochs if has_landmarks else []
        return first + ["all"] * self.epochs + ["finetune"] * self.finetune_epochs


def demo_config(data: Path, out: Path, *, input_size: int = 224, benchmark: str = "consumer2shop",
                cache_dir: Path = DEFAULT_CACHE_DIR) -> TrainConfig:
    """What `make demo` and `fashion quickstart` train: the default recipe at the demo's input size."""
    return TrainConfig(data=data, out=out, benchmark=benchmark, input_size=input_size, cache_dir=cache_dir)


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


# ------------------------------------------------------------------------------------------ the data


def _training_records(bench: Benchmark, domains: tuple[str, ...] | None) -> list[ImageRecord]:
    records = [r for r in bench.split(*TRAIN_SPLITS) if domains is None or r.domain in domains]
    if not records:
        wanted = f" from domains {', '.join(domains)}" if domains else ""
        raise InvalidInput(f"expected images{wanted} in split 'train' of {bench.root}, found none")
    return records


# ------------------------------------------------------------------------------------------ the model


def _new_metadata(config: TrainConfig, bench: Benchmark) -> ModelMetadata:
    missing = [f for f, vocab in (("Anno/list_category_cloth.txt + Anno/list_category_img.txt", bench.categories),
                                  ("Anno/list_attr_cloth.txt + Anno/list_attr_img.txt", bench.attributes))
               if not vocab]
    if missing:
        raise InvalidInput(f"expected {' and '.join(missing)} in {bench.root} to build the category and attribute "
                           "heads; to train on item groupings alone, pass --init-checkpoint with a trained "
                           "FashionNet (e.g. var/demo/runs/demo/model.pt) whose heads are kept")
    version = config.version or "fn-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return default_metadata(config.architecture, bench.categories, bench.attributes, version=version,
                            embedding_dim=config.embedding_dim, input_size=config.input_size,
                            landmark_pooling=config.landmark_pooling, embedding_skip=config.embedding_skip,
                            embedding_neck=config.embedding_neck, global_mid=config.global_mid,
                            garment_box=config.garment_box)


def _init_from_checkpoint(config: TrainConfig, bench: Benchmark) -> tuple[torch.nn.Module, ModelMetadata]:
    """A fine-tuning start: the parent's architecture, vocabularies and weights; a version of its own."""
    blob = read_checkpoint(config.init_checkpoint)
    parent = ModelMetadata.from_dict(blob["metadata"])
    version = config.version or "fn-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    metadata = dataclasses.replace(parent, version=version, parent_version=parent.version, notes={},
                                   created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"))
    for vocab, parent_vocab, what in ((bench.categories, parent.categories, "categories"),
                                      (bench.attributes, parent.attributes, "attributes")):
        if vocab and vocab != parent_vocab:
            raise InvalidInput(f"expected the data's {what} to match the init checkpoint's ({len(parent_vocab)} "
                               f"{what}), got {len(vocab)} different ones in {bench.root}")
    model = build_model(metadata, pretrained=False)
    model.load_state_dict(blob["state_dict"])
    return model, metadata


@dataclass(frozen=True)
class Frozen:
    """Which heads keep their initial weights because the data has no labels for them."""

    landmarks: bool
    category: bool
    attributes: bool

    def prefixes(self) -> tuple[str, ...]:
        return tuple(p for p, frozen in (("landmark_branch.", self.landmarks), ("category_head.", self.category),
                                         ("attribute_head.", self.attributes)) if frozen)

    def distilled_heads(self) -> tuple[str, ...]:
        """The frozen classification heads, held at the init model's answers while the layers they read move.

        Not the landmarks: their branch reads only the stride-16 map, which no stage trains, so a frozen landmark
        branch cannot move."""
        return tuple(head for head, frozen in (("category", self.category), ("attributes", self.attributes)) if frozen)


def _frozen_heads(bench: Benchmark, records: list[ImageRecord], fine_tuning: bool) -> Frozen:
    if not fine_tuning:
        return Frozen(False, False, False)
    return Frozen(landmarks=not any(r.landmarks is not None for r in records),
                  category=not any(r.category is not None for r in records),
                  attributes=not any(r.attributes is not None for r in records))


def _configure(model: torch.nn.Module, frozen: Frozen, stage: str) -> list[torch.nn.Parameter]:
    """Train mode for what learns this stage, eval mode + no gradients for the rest; returns the learners.

    The backbone stays in eval mode throughout: its BatchNorm statistics are ImageNet's and the cache was
    computed with them. In phase 3 its last stage learns weights, still with frozen statistics.
    """
    model.train()
    model.backbone.eval()
    model.backbone.requires_grad_(False)
    if stage == "finetune":
        model.backbone.top.requires_grad_(True)
    for prefix in frozen.prefixes():
        module = model.get_submodule(prefix.rstrip("."))
        module.eval()
        module.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _optimizer(model: torch.nn.Module, metric: MetricLoss, config: TrainConfig) -> torch.optim.Optimizer:
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    return torch.optim.AdamW(
        [{"params": heads, "lr": config.lr, "name": "heads"},
         {"params": list(model.backbone.top.parameters()), "lr": config.finetune_lr, "name": "backbone.top"},
         {"params": list(metric.parameters()), "lr": config.lr, "name": "metric"}],
        weight_decay=config.weight_decay,
    )


def _learning_rate_scale(step: int, total: int, warmup: int) -> float:
    """Linear warm-up, then cosine decay to zero over the phase."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


# ------------------------------------------------------------------------------------------ the loop


def _epoch_batches(stage: str, data: CachedSet, sampler: CrossDomainBatchSampler, config: TrainConfig,
                   epoch: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The epoch's (image index, view) batches, deterministic per (seed, epoch)."""
    rng = np.random.default_rng([config.seed, epoch, 7])
    views = data.mid.shape[1]
    if stage == "landmarks":
        order = rng.permutation(data.mid.shape[0])
        bs = config.batch_size
        chunks = [order[i:i + bs] for i in range(0, len(order), bs)]
    else:
        sampler.set_epoch(epoch)
        chunks = [np.asarray(b) for b in sampler]
    # A one-image batch is dropped: BatchNorm (the BN-neck, the branches) needs two samples to train.
    chunks = [c for c in chunks if len(c) >= 2][:config.max_steps_per_epoch]
    return [(torch.from_numpy(c.astype(np.int64)), torch.from_numpy(rng.integers(0, views, len(c)).astype(np.int64)))
            for c in chunks]


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the serving checkpoint `model.pt`."""
    started = time.monotonic()
    if "OMP_NUM_THREADS" not in os.environ:  # an explicit setting wins (jobs sharing a machine)
        torch.set_num_threads(os.cpu_count() or 1)
    device = resolve_device(config.device)
    bench = load_benchmark(config.data, config.benchmark)
    records = _training_records(bench, config.domains)
    item_index = {item: i for i, item in enumerate(sorted({r.item_id for r in records if r.item_id}))}

    torch.manual_seed(config.seed)  # the heads' initial weights
    fine_tuning = config.init_checkpoint is not None
    if fine_tuning:
        model, metadata = _init_from_checkpoint(config, bench)
    else:
        metadata = _new_metadata(config, bench)
        model = build_model(metadata, pretrained=True)
    metric = make_metric_loss(config.metric_loss, num_items=len(item_index), dim=metadata.embedding_dim,
                              margin=config.margin, temperature=config.temperature, seed=config.seed)
    frozen = _frozen_heads(bench, records, fine_tuning)
    # Shared layers (branches, fusion) learn from the embedding loss alone; distillation keeps the heads they
    # feed, for which the data has no labels, predicting what the init model predicted.
    teacher = copy.deepcopy(model).eval().requires_grad_(False) if frozen.category or frozen.attributes else None

    last = config.out / "last.pt"
    start_epoch, history = 0, []
    resume = read_checkpoint(last) if last.exists() else None
    if resume is not None:
        model.load_state_dict(resume["state_dict"])
        metric.load_state_dict(resume["metric_state"])
        metadata = ModelMetadata.from_dict(resume["metadata"])
        start_epoch, history = resume["epoch"], resume.get("history", [])
        log.info("resuming %s at epoch %d", last, start_epoch)

    phase1_start = time.monotonic()
    data, cache_summary = load_cached_set(bench, records, model, metadata, item_index, views=config.views,
                                          cache_dir=config.cache_dir, workers=config.workers, progress=progress)
    phase1_s = time.monotonic() - phase1_start
    if progress:
        tqdm.write(cache_summary)

    model.to(device)
    metric.to(device)
    has_landmarks = not frozen.landmarks and bool((data.visibility != VIS_ABSENT).any())
    schedule = config.schedule(has_landmarks)
    sampler = CrossDomainBatchSampler(data.item.tolist(), [r.domain for r in records], config.items_per_batch,
                                      config.images_per_item, seed=config.seed)
    if len(sampler) == 0 and any(s != "landmarks" for s in schedule):
        raise InvalidInput(f"expected at least {config.items_per_batch} training items with two or more images "
                           f"each in {bench.root}, found {len(sampler.usable)}; lower --items-per-batch")
    optimizer = _optimizer(model, metric, config)
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
    positives = data.attributes[data.attributes_known].sum(dim=0)
    pos_weight = attribute_pos_weight(positives, int(data.attributes_known.sum())).to(device)
    steps_of = {s: len(_epoch_batches(s, data, sampler, config, 0)) for s in set(schedule)}

    def snapshot(epoch: int) -> None:
        save_checkpoint(last, model, metadata, optimizer=optimizer.state_dict(), metric_state=metric.state_dict(),
                        epoch=epoch, history=history, config=_config_dict(config))

    total_steps = sum(steps_of[s] for s in schedule)
    done_steps = sum(steps_of[s] for s in schedule[:start_epoch])
    bar = tqdm(total=total_steps, initial=done_steps, disable=not progress, unit="step",
               desc="phase 2: training the heads on the cache")
    phase2_start = time.monotonic()
    for epoch in range(start_epoch, len(schedule)):
        stage = schedule[epoch]
        learners = _configure(model, frozen, stage)
        torch.manual_seed(config.seed * 100_003 + epoch)  # dropout: replays identically after a resume
        batches = _epoch_batches(stage, data, sampler, config, epoch)
        stage_start = schedule.index(stage)
        stage_steps = steps_of[stage] * schedule.count(stage)
        sums: dict[str, float] = {}
        for step, (index, view) in enumerate(batches):
            scale = _learning_rate_scale((epoch - stage_start) * steps_of[stage] + step, stage_steps,
                                         warmup=steps_of[stage])
            for group in optimizer.param_groups:
                base = config.finetune_lr if group["name"] == "backbone.top" else config.lr
                group["lr"] = base * scale if group["name"] != "backbone.top" or stage == "finetune" else 0.0
            mid = data.mid[index, view].to(device).float()
            if stage == "finetune":
                pooled = F.adaptive_avg_pool2d(model.backbone.top(mid), 1).flatten(1)
            else:
                pooled = data.pooled[index, view].to(device).float()
            if config.feature_dropout and stage != "landmarks":
                mid = F.dropout(mid, config.feature_dropout)
                pooled = F.dropout(pooled, config.feature_dropout)
            out = model.forward_trunk(mid, pooled)
            targets = data.targets(index, view, device)
            losses = total_loss(out, targets, config.weights, stage="landmarks" if stage == "landmarks" else "all",
                                pos_weight=pos_weight, margin=config.margin, metric=metric)
            if teacher is not None and stage != "landmarks":
                with torch.no_grad():
                    teacher_out = teacher.forward_trunk(mid, pooled)
                losses["distill"] = distillation_loss(out, teacher_out, frozen.distilled_heads())
                losses["total"] = losses["total"] + losses["distill"]
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            torch.nn.utils.clip_grad_norm_(learners, 5.0)
            optimizer.step()
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
            bar.update(1)
            bar.set_postfix_str(f"epoch {epoch + 1}/{len(schedule)} [{stage}] "
                                + " ".join(f"{k} {v / (step + 1):.3f}" for k, v in sums.items()))
        history.append({"epoch": epoch + 1, "stage": stage, **{k: v / max(len(batches), 1) for k, v in sums.items()}})
        snapshot(epoch + 1)
    bar.close()

    model = model.cpu().eval()
    metadata.notes = {"history": history, "benchmark": bench.name, "train_images": len(records),
                      "train_items": len(item_index), "frozen_heads": list(frozen.prefixes()),
                      "cache": cache_summary, "phase1_seconds": round(phase1_s, 1),
                      "phase2_seconds": round(time.monotonic() - phase2_start, 1),
                      "seconds": round(time.monotonic() - started, 1), "config": _config_dict(config)}
    return save_checkpoint(config.out / "model.pt", model, metadata)


def _config_dict(config: TrainConfig) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(config), default=str))
