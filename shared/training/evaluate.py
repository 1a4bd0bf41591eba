"""`fashion eval`: the paper's metrics for one checkpoint (or the ImageNet baseline) on one benchmark."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.table import Table
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from shared.data.dataset import FashionDataset, collate
from shared.data.deepfashion import load_benchmark
from shared.data.records import Benchmark, ImageRecord
from shared.errors import InvalidInput
from shared.fashionnet.backbones import get_backbone_spec
from shared.fashionnet.checkpoint import load_checkpoint
from shared.fashionnet.preprocess import normalize
from shared.fashionnet.registry import create_model
from shared.training import metrics
from shared.training.train import resolve_device

IMAGENET = "imagenet"
# Published FashionNet figures (Liu et al. 2016), shown beside ours for orientation (fractions).
PAPER = {"category.top3": 0.8258, "category.top5": 0.9017, "attributes.all.top3": 0.4552,
         "attributes.all.top5": 0.5461, "landmarks.ne": 0.0872, "retrieval.top1": 0.532, "retrieval.top20": 0.764}


@dataclass
class Predictions:
    embedding: np.ndarray
    landmarks: np.ndarray | None
    visibility_logits: np.ndarray | None
    category_logits: np.ndarray | None
    attribute_logits: np.ndarray | None


def load_model(checkpoint: str | Path, input_size: int) -> tuple[nn.Module, int, tuple, tuple]:
    """(model, input size, mean, std); `imagenet` = the untrained backbone with global pooling."""
    if str(checkpoint) == IMAGENET:
        spec = get_backbone_spec("efficientnet_lite0")
        return create_model("imagenet_efficientnet_lite0").eval(), input_size, spec.mean, spec.std
    model, meta = load_checkpoint(checkpoint)
    return model, meta.input_size, meta.mean, meta.std


@torch.inference_mode()
def predict(model: nn.Module, bench: Benchmark, records: list[ImageRecord], input_size: int, mean: tuple,
            std: tuple, *, batch_size: int = 32, device: str = "auto", progress: bool = True) -> Predictions:
    dev = resolve_device(device)
    model = model.to(dev).eval().to(memory_format=torch.channels_last)
    loader = DataLoader(FashionDataset(bench, records, input_size), batch_size=batch_size, collate_fn=collate,
                        num_workers=min(2, os.cpu_count() or 1))
    parts: dict[str, list[np.ndarray]] = {}
    for batch in tqdm(loader, desc="embedding", unit="batch", disable=not progress):
        x = normalize(batch["image"].numpy(), mean, std).to(dev).contiguous(memory_format=torch.channels_last)
        out = model(x)
        for name in Predictions.__dataclass_fields__:
            value = getattr(out, name)
            if value is not None:
                parts.setdefault(name, []).append(value.float().cpu().numpy())
    return Predictions(**{n: np.concatenate(parts[n]) if n in parts else None
                          for n in Predictions.__dataclass_fields__})


def retrieval_sets(bench: Benchmark, records: list[ImageRecord]) -> tuple[np.ndarray, np.ndarray] | None:
    """Boolean masks (query, gallery) over `records`, following each benchmark's protocol."""
    if bench.name == "inshop":
        return (np.array([r.split == "query" for r in records]), np.array([r.split == "gallery" for r in records]))
    if bench.name == "consumer2shop":
        return (np.array([r.domain == "consumer" for r in records]), np.array([r.domain == "shop" for r in records]))
    return None


def evaluation_records(bench: Benchmark, split: str) -> list[ImageRecord]:
    splits = ("query", "gallery") if bench.name == "inshop" and split == "test" else (split,)
    records = bench.split(*splits)
    if not records:
        raise InvalidInput(f"expected images in split {'/'.join(splits)} of {bench.root}, found none")
    return records


def compute_metrics(bench: Benchmark, records: list[ImageRecord], pred: Predictions) -> dict:
    result: dict = {}
    categories = np.array([-1 if r.category is None else r.category for r in records])
    if pred.category_logits is not None and (categories >= 0).any():
        acc = metrics.topk_accuracy(pred.category_logits, categories, ks=(3, 5))
        result["category"] = {f"top{k}": v for k, v in acc.items()}
    known = np.array([r.attributes is not None for r in records])
    if pred.attribute_logits is not None and known.any():
        targets = np.stack([r.attributes for r in records if r.attributes is not None])
        recall = metrics.attribute_topk_recall(pred.attribute_logits[known], targets,
                                               [a.group for a in bench.attributes], ks=(3, 5))
        result["attributes"] = {g: {f"top{k}": v for k, v in by_k.items()} for g, by_k in recall.items()}
    has_lm = np.array([r.landmarks is not None for r in records])
    if pred.landmarks is not None and has_lm.any():
        sizes = np.array([_image_size(bench, r) for r in records if r.landmarks is not None], np.float32)
        target = np.stack([r.landmarks for r in records if r.landmarks is not None]) / sizes[:, None, :]
        vis = np.stack([r.visibility for r in records if r.landmarks is not None])
        errors = metrics.landmark_errors(pred.landmarks[has_lm], target, vis)
        result["landmarks"] = {"ne": errors["ne"],
                               **{f"detection_rate@{t:g}": v for t, v in errors["detection_rate"].items()}}
        if pred.visibility_logits is not None:
            result["landmarks"]["visibility_accuracy"] = metrics.visibility_accuracy(
                pred.visibility_logits[has_lm], vis)
    sets = retrieval_sets(bench, records)
    if sets is not None and sets[0].any() and sets[1].any():
        query, gallery = sets
        ids = np.array([r.item_id or "" for r in records])
        ret = metrics.retrieval_topk(pred.embedding[query], ids[query], pred.embedding[gallery], ids[gallery],
                                     ks=(1, 5, 10, 20))
        result["retrieval"] = {**{f"top{k}": v for k, v in ret["topk"].items()}, "queries": ret["queries"],
                               "queries_without_match": ret["queries_without_match"],
                               "gallery": int(gallery.sum())}
    return result


def _image_size(bench: Benchmark, record: ImageRecord) -> tuple[int, int]:
    from PIL import Image

    with Image.open(bench.path(record)) as im:
        return im.size


def evaluate(benchmark: str | None, data: Path, checkpoint: str | Path, *, split: str = "test",
             input_size: int = 224, batch_size: int = 32, device: str = "auto", progress: bool = True) -> dict:
    bench = load_benchmark(data, benchmark)
    records = evaluation_records(bench, split)
    model, size, mean, std = load_model(checkpoint, input_size)
    pred = predict(model, bench, records, size, mean, std, batch_size=batch_size, device=device,
                   progress=progress)
    return {"benchmark": bench.name, "images": len(records), "checkpoint": str(checkpoint),
            **compute_metrics(bench, records, pred)}


def print_report(result: dict, console: Console | None = None) -> None:
    flat = metrics.flatten_metrics({k: v for k, v in result.items() if isinstance(v, dict)})
    table = Table(title=f"{result['benchmark']} - {result['images']} images - {result['checkpoint']}")
    table.add_column("metric")
    table.add_column("value", justify="right")
    table.add_column("FashionNet paper", justify="right", style="dim")
    # The paper measured single-garment photos: its figures say nothing of per-garment retrieval on outfits.
    paper = {} if result["benchmark"] == "outfits" else PAPER
    for key, value in flat.items():
        shown = f"{value:.4f}" if isinstance(value, float) else str(value)
        table.add_row(key, shown, f"{paper[key]:.4f}" if key in paper else "")
    (console or Console()).print(table)


def write_json(result: dict, path: Path) -> None:
    flat = metrics.flatten_metrics({k: v for k, v in result.items() if isinstance(v, dict)})
    payload = {"benchmark": result["benchmark"], "images": result["images"], "checkpoint": result["checkpoint"],
               **flat}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n")
