"""`fashion train`: the paper's schedule (landmarks first, then all tasks jointly), resumable.

A run directory holds `last.pt` (model, optimiser, position in the schedule) written every
`checkpoint_every` steps and at each epoch end, and `model.pt`, the serving checkpoint, at the end.
Restarting with the same directory resumes from `last.pt` instead of starting over.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from shared.data.dataset import FashionDataset, ItemBatchSampler, build_item_index, collate
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
from shared.fashionnet.losses import LossWeights, Targets, attribute_pos_weight, total_loss
from shared.fashionnet.preprocess import normalize

log = logging.getLogger(__name__)

TRAIN_SPLITS = ("train",)


@dataclass
class TrainConfig:
    data: Path
    out: Path
    benchmark: str | None = None
    architecture: str = "fashionnet_efficientnet_lite0"
    landmark_pooling: bool = True
    embedding_skip: bool = True
    input_size: int = 224
    embedding_dim: int = 256
    landmark_epochs: int = 1
    epochs: int = 3
    items_per_batch: int = 8
    images_per_item: int = 4
    lr: float = 1e-3
    backbone_lr_scale: float = 0.1
    weight_decay: float = 1e-4
    margin: float | None = 0.2  # None = soft margin
    seed: int = 0
    device: str = "auto"
    workers: int = 1
    max_steps_per_epoch: int | None = None
    checkpoint_every: int = 50
    init_checkpoint: Path | None = None
    version: str | None = None
    domains: tuple[str, ...] | None = None  # e.g. ("shop",): train without consumer photos
    weights: LossWeights = field(default_factory=LossWeights)

    @property
    def batch_size(self) -> int:
        return self.items_per_batch * self.images_per_item

    def schedule(self) -> list[str]:
        """One stage name per epoch: landmark epochs first, then joint epochs (the paper's order)."""
        return ["landmarks"] * self.landmark_epochs + ["all"] * self.epochs


def cpu_budget_config(data: Path, out: Path, *, input_size: int = 160, epochs: int = 2,
                      benchmark: str = "consumer2shop") -> TrainConfig:
    """What the demo and quickstart train in a few CPU minutes: landmark, category and attribute heads on a
    frozen ImageNet backbone, the embedding left at its fixed ImageNet projection (embedding_skip).

    Measured (docs/RESULTS.md, "Short runs"): in runs this short the batch-hard triplet loss sits on its
    collapse plateau and any embedding training lowered held-out retrieval (0.418 -> 0.265 top-1), so the
    embedding is learned later, from clicks (`fashion retrain`) or by a long `fashion train` on a GPU.
    """
    return TrainConfig(data=data, out=out, benchmark=benchmark, input_size=input_size, landmark_epochs=1,
                       epochs=epochs, backbone_lr_scale=0.0, weights=LossWeights(triplet=0.0))


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def to_targets(batch: dict[str, torch.Tensor], device: torch.device) -> Targets:
    return Targets(
        landmarks=batch["landmarks"].to(device), visibility=batch["visibility"].to(device),
        category=batch["category"].to(device), attributes=batch["attributes"].to(device),
        attributes_known=batch["attributes_known"].to(device), item=batch["item"].to(device),
    )


def set_train_mode(model: torch.nn.Module, config: TrainConfig) -> None:
    """Train mode, except a frozen backbone (backbone_lr_scale 0): no gradients and BatchNorm in eval mode.

    A backbone at lr 0 still drifts in train mode, because BatchNorm keeps updating its running statistics
    from the training batches; measured on synthetic consumer-to-shop that alone dropped the untouched
    ImageNet embedding's retrieval (see docs/RESULTS.md). Frozen also skips the backbone's backward pass.
    """
    model.train()
    if config.backbone_lr_scale == 0:
        model.backbone.eval()
        model.backbone.requires_grad_(False)


def _optimizer(model: torch.nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    backbone = [p for n, p in model.named_parameters() if n.startswith("backbone.") and p.requires_grad]
    heads = [p for n, p in model.named_parameters() if not n.startswith("backbone.")]
    return torch.optim.AdamW(
        [{"params": backbone, "lr": config.lr * config.backbone_lr_scale}, {"params": heads, "lr": config.lr}],
        weight_decay=config.weight_decay,
    )


def _training_records(bench: Benchmark, domains: tuple[str, ...] | None) -> list[ImageRecord]:
    records = [r for r in bench.split(*TRAIN_SPLITS) if domains is None or r.domain in domains]
    if not records:
        wanted = f" from domains {', '.join(domains)}" if domains else ""
        raise InvalidInput(f"expected images{wanted} in split 'train' of {bench.root}, found none")
    return records


def _new_metadata(config: TrainConfig, bench: Benchmark) -> ModelMetadata:
    if not bench.categories or not bench.attributes:
        raise InvalidInput(f"expected category and attribute vocabularies in {bench.root}/Anno "
                           "(list_category_cloth.txt, list_attr_cloth.txt) to build the model's heads")
    version = config.version or "fn-" + dt.datetime.now(dt.UTC).strftime("%Y%m%d-%H%M%S")
    return default_metadata(config.architecture, bench.categories, bench.attributes, version=version,
                            embedding_dim=config.embedding_dim, input_size=config.input_size,
                            landmark_pooling=config.landmark_pooling, embedding_skip=config.embedding_skip)


def _batches(stage: str, dataset: FashionDataset, config: TrainConfig, epoch: int, skip: int) -> list[list[int]]:
    """The epoch's batches as index lists, deterministic per (seed, epoch), minus those already trained."""
    items = [dataset.item_index.get(r.item_id, -1) if r.item_id else -1 for r in dataset.records]
    sampler = ItemBatchSampler(items, config.items_per_batch, config.images_per_item, seed=config.seed)
    if stage == "all" and len(sampler) > 0:
        sampler.set_epoch(epoch)
        batches = list(sampler)
    else:
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(config.seed * 1000 + epoch))
        bs = config.batch_size
        batches = [order[i:i + bs].tolist() for i in range(0, len(order) - bs + 1, bs)] or [order.tolist()]
    if config.max_steps_per_epoch is not None:
        batches = batches[:config.max_steps_per_epoch]
    return batches[skip:]


def train(config: TrainConfig, *, progress: bool = True) -> Path:
    """Run (or resume) training; returns the path of the serving checkpoint `model.pt`."""
    torch.manual_seed(config.seed)
    torch.set_num_threads(os.cpu_count() or 1)
    device = resolve_device(config.device)
    bench = load_benchmark(config.data, config.benchmark)
    records = _training_records(bench, config.domains)
    dataset = FashionDataset(bench, records, config.input_size, train=True, seed=config.seed,
                             item_index=build_item_index(records))

    last = config.out / "last.pt"
    start_epoch, start_step, history = 0, 0, []
    if last.exists():
        blob = read_checkpoint(last)
        metadata = ModelMetadata.from_dict(blob["metadata"])
        model = build_model(metadata, pretrained=False)
        model.load_state_dict(blob["state_dict"])
        start_epoch, start_step, history = blob["epoch"], blob["step"], blob.get("history", [])
        log.info("resuming %s at epoch %d step %d", last, start_epoch, start_step)
    elif config.init_checkpoint is not None:
        blob = read_checkpoint(config.init_checkpoint)
        parent = ModelMetadata.from_dict(blob["metadata"])
        metadata = dataclasses.replace(_new_metadata(config, bench), categories=parent.categories,
                                       attributes=parent.attributes, architecture=parent.architecture,
                                       embedding_dim=parent.embedding_dim, input_size=parent.input_size,
                                       landmark_pooling=parent.landmark_pooling, embedding_skip=parent.embedding_skip,
                                       parent_version=parent.version)
        model = build_model(metadata, pretrained=False)
        model.load_state_dict(blob["state_dict"])
        blob = None
    else:
        metadata = _new_metadata(config, bench)
        model = build_model(metadata, pretrained=True)
        blob = None
    set_train_mode(model.to(device), config)
    optimizer = _optimizer(model, config)
    if blob is not None and "optimizer" in blob:
        optimizer.load_state_dict(blob["optimizer"])

    positives = torch.tensor(sum(r.attributes for r in records if r.attributes is not None)
                             if any(r.attributes is not None for r in records) else [0] * len(bench.attributes),
                             dtype=torch.float32)
    pos_weight = attribute_pos_weight(positives, len(records)).to(device)
    schedule = config.schedule()

    def snapshot(epoch: int, step: int) -> None:
        save_checkpoint(last, model, metadata, optimizer=optimizer.state_dict(), epoch=epoch, step=step,
                        history=history, config=json.loads(json.dumps(dataclasses.asdict(config), default=str)))

    for epoch in range(start_epoch, len(schedule)):
        stage = schedule[epoch]
        dataset.epoch = epoch
        skip = start_step if epoch == start_epoch else 0
        batches = _batches(stage, dataset, config, epoch, skip)
        loader = DataLoader(dataset, batch_sampler=batches, collate_fn=collate, num_workers=config.workers)
        bar = tqdm(loader, total=len(batches) + skip, initial=skip, disable=not progress,
                   desc=f"epoch {epoch + 1}/{len(schedule)} [{stage}]", unit="batch")
        sums: dict[str, float] = {}
        count = 0
        for step, batch in enumerate(bar, start=skip):
            images = normalize(batch["image"].numpy(), metadata.mean, metadata.std).to(device)
            out = model(images)
            losses = total_loss(out, to_targets(batch, device), config.weights, stage=stage,
                                pos_weight=pos_weight, margin=config.margin)
            optimizer.zero_grad(set_to_none=True)
            losses["total"].backward()
            optimizer.step()
            count += 1
            for name, value in losses.items():
                sums[name] = sums.get(name, 0.0) + value.item()
            bar.set_postfix({k: f"{v / count:.3f}" for k, v in sums.items()})
            if config.checkpoint_every and (step + 1) % config.checkpoint_every == 0:
                snapshot(epoch, step + 1)
        history.append({"epoch": epoch + 1, "stage": stage, **{k: v / max(count, 1) for k, v in sums.items()}})
        snapshot(epoch + 1, 0)

    metadata.notes = {"history": history, "benchmark": bench.name, "train_images": len(records),
                      "config": json.loads(json.dumps(dataclasses.asdict(config), default=str))}
    return save_checkpoint(config.out / "model.pt", model.cpu().eval(), metadata)
