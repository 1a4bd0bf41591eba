"""The evaluation dataset over loaded DeepFashion benchmarks (training reads cached features: shared/training)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image
from torch.utils.data import Dataset

from shared.data.records import Benchmark, ImageRecord
from shared.fashionnet.preprocess import image_to_array
from shared.vocabulary import NUM_LANDMARKS, VIS_ABSENT


class FashionDataset(Dataset):
    """One sample per record: uint8 image (H, W, 3) and every label, with masks for what is unknown.

    Normalisation happens on the batch (see `collate`), once, instead of per sample.
    """

    def __init__(self, benchmark: Benchmark, records: Sequence[ImageRecord], input_size: int, *,
                 item_index: dict[str, int] | None = None) -> None:
        self.benchmark = benchmark
        self.records = list(records)
        self.input_size = input_size
        self.item_index = item_index if item_index is not None else build_item_index(self.records)
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
