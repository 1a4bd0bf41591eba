"""Phase 1's result as phase 2 uses it: every training image's cached backbone features (per view) and labels,
in memory. The features come from the trunk cache (shared/training/trunk_cache.py), computed where missing."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from shared.data.records import Benchmark, ImageRecord
from shared.fashionnet.checkpoint import ModelMetadata
from shared.fashionnet.losses import Targets
from shared.fashionnet.registry import backbone_of
from shared.training.trunk_cache import CachedImage, TrunkCache, build_cache, cache_key
from shared.training.views import transform_landmarks, view_params
from shared.vocabulary import NUM_LANDMARKS, VIS_ABSENT


@dataclass
class CachedSet:
    """Phase 2's whole training set in memory: cached features plus every label, per image and view."""

    mid: torch.Tensor  # (N, V, C, h, w) float16
    pooled: torch.Tensor  # (N, V, C') float16
    landmarks: torch.Tensor  # (N, V, 8, 2) fractions of the view
    visibility: torch.Tensor  # (N, V, 8)
    category: torch.Tensor  # (N,)
    attributes: torch.Tensor  # (N, A)
    attributes_known: torch.Tensor  # (N,)
    item: torch.Tensor  # (N,) -1 = no item

    def targets(self, index: torch.Tensor, view: torch.Tensor, device: torch.device) -> Targets:
        return Targets(landmarks=self.landmarks[index, view].to(device),
                       visibility=self.visibility[index, view].to(device),
                       category=self.category[index].to(device), attributes=self.attributes[index].to(device),
                       attributes_known=self.attributes_known[index].to(device), item=self.item[index].to(device))


def _labels(records: list[ImageRecord], entries: list[CachedImage], views: int, digests: list[str],
            num_attributes: int, item_index: dict[str, int]) -> dict[str, torch.Tensor]:
    n = len(records)
    landmarks = np.zeros((n, views, NUM_LANDMARKS, 2), np.float32)
    visibility = np.full((n, views, NUM_LANDMARKS), VIS_ABSENT, np.int64)
    for i, (record, entry) in enumerate(zip(records, entries, strict=True)):
        if record.landmarks is None or record.visibility is None:
            continue
        fractions = record.landmarks.astype(np.float32) / np.array(entry.size, np.float32)
        for v in range(views):
            landmarks[i, v], visibility[i, v] = transform_landmarks(fractions, record.visibility.astype(np.int64),
                                                                    view_params(digests[i], v))
    attributes = np.zeros((n, num_attributes), np.float32)
    for i, record in enumerate(records):
        if record.attributes is not None and num_attributes:
            attributes[i] = record.attributes
    return {
        "landmarks": torch.from_numpy(landmarks), "visibility": torch.from_numpy(visibility),
        "category": torch.tensor([-1 if r.category is None else r.category for r in records]),
        "attributes": torch.from_numpy(attributes),
        "attributes_known": torch.tensor([r.attributes is not None and num_attributes > 0 for r in records]),
        "item": torch.tensor([item_index.get(r.item_id, -1) if r.item_id else -1 for r in records]),
    }


def load_cached_set(bench: Benchmark, records: list[ImageRecord], model: torch.nn.Module, metadata: ModelMetadata,
                    item_index: dict[str, int], *, views: int, cache_dir: Path, workers: int,
                    progress: bool) -> tuple[CachedSet, str]:
    """Phase 1: every record's cached features (computed where missing) and labels; plus the cache summary."""
    backbone_name = backbone_of(metadata.architecture)
    key = cache_key(model.backbone, backbone_name, metadata.input_size, views)
    cache = TrunkCache(cache_dir, key)
    entries, digests = build_cache(bench, records, model.backbone, cache=cache, views=views,
                                   input_size=metadata.input_size, mean=metadata.mean, std=metadata.std,
                                   workers=workers, progress=progress)
    labels = _labels(records, entries, views, digests, len(metadata.attributes), item_index)
    mid = torch.from_numpy(np.stack([e.mid for e in entries]))
    pooled = torch.from_numpy(np.stack([e.pooled for e in entries]))
    summary = f"trunk cache {cache.dir}: {cache.stats.describe()}"
    return CachedSet(mid=mid, pooled=pooled, **labels), summary
