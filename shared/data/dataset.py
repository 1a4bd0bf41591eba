"""PyTorch datasets and samplers over loaded DeepFashion benchmarks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset, Sampler

from shared.data.records import NUM_LANDMARKS, VIS_ABSENT, Benchmark, ImageRecord
from shared.fashionnet.preprocess import image_to_array

# Mirroring an image swaps left and right landmarks: collar, sleeve, waistline and hem pairs.
FLIP_ORDER = (1, 0, 3, 2, 5, 4, 7, 6)


class FashionDataset(Dataset):
    """One sample per record: uint8 image (H, W, 3) and every label, with masks for what is unknown.

    Normalisation happens on the batch (see `collate`), once, instead of per sample.
    """

    def __init__(self, benchmark: Benchmark, records: Sequence[ImageRecord], input_size: int, *,
                 item_index: dict[str, int] | None = None, train: bool = False, seed: int = 0) -> None:
        self.benchmark = benchmark
        self.records = list(records)
        self.input_size = input_size
        self.item_index = item_index if item_index is not None else build_item_index(self.records)
        self.train = train
        self.seed = seed
        self.epoch = 0  # set by the trainer so flips differ per epoch yet replay identically on resume
        self.num_attributes = len(benchmark.attributes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, np.ndarray | int | bool]:
        record = self.records[index]
        with Image.open(self.benchmark.path(record)) as im:
            width, height = im.size
            pixels = image_to_array(im, self.input_size)
        landmarks = np.zeros((NUM_LANDMARKS, 2), np.float32)
        visibility = np.full(NUM_LANDMARKS, VIS_ABSENT, np.int64)
        if record.landmarks is not None and record.visibility is not None:
            landmarks = record.landmarks.astype(np.float32) / np.array([width, height], np.float32)
            visibility = record.visibility.astype(np.int64)
        if self.train and np.random.default_rng([self.seed, self.epoch, index]).random() < 0.5:
            pixels = pixels[:, ::-1]
            landmarks = landmarks[list(FLIP_ORDER)]
            landmarks[:, 0] = np.where(visibility[list(FLIP_ORDER)] == VIS_ABSENT, 0.0, 1.0 - landmarks[:, 0])
            visibility = visibility[list(FLIP_ORDER)]
        attributes = np.zeros(self.num_attributes, np.float32)
        if record.attributes is not None:
            attributes = record.attributes.astype(np.float32)
        return {
            "image": np.ascontiguousarray(pixels),
            "landmarks": landmarks,
            "visibility": visibility,
            "category": -1 if record.category is None else record.category,
            "attributes": attributes,
            "attributes_known": record.attributes is not None,
            "item": self.item_index.get(record.item_id, -1) if record.item_id else -1,
            "index": index,
        }


def build_item_index(records: Sequence[ImageRecord]) -> dict[str, int]:
    return {item: i for i, item in enumerate(sorted({r.item_id for r in records if r.item_id}))}


def collate(samples: list[dict]) -> dict[str, torch.Tensor]:
    return {key: torch.as_tensor(np.stack([s[key] for s in samples])) for key in samples[0]}


class ItemBatchSampler(Sampler[list[int]]):
    """P items x K images per batch, so every batch holds positives and negatives for triplet mining.

    Deterministic per (seed, epoch): a resumed run can skip exactly the batches it already trained on.
    """

    def __init__(self, items: Sequence[int], items_per_batch: int, images_per_item: int, seed: int = 0) -> None:
        self.by_item: dict[int, list[int]] = defaultdict(list)
        for index, item in enumerate(items):
            self.by_item[item].append(index)
        self.usable = sorted(i for i, idx in self.by_item.items() if i >= 0 and len(idx) >= 2)
        self.p = items_per_batch
        self.k = images_per_item
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.usable) // self.p

    def __iter__(self) -> Iterator[list[int]]:
        rng = np.random.default_rng([self.seed, self.epoch])
        order = rng.permutation(self.usable)
        for start in range(0, len(self) * self.p, self.p):
            batch: list[int] = []
            for item in order[start:start + self.p]:
                pool = self.by_item[int(item)]
                batch.extend(int(i) for i in rng.choice(pool, size=self.k, replace=len(pool) < self.k))
            yield batch
