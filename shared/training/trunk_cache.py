"""Phase 1 of training: the frozen backbone's features for every training image and view, computed once.

With the backbone frozen (BatchNorm in eval mode), its output for a given image, view and input size never
changes, so it is computed once and stored; the heads then train for many epochs in seconds each (phase 2).

Layout: ``CACHE_DIR/<key>/<hh>/<content hash>.npz``, one file per image holding all its views:
- ``mid``: the stride-16 map, (views, C, H/16, W/16) float16 — landmark branch and landmark pooling read it;
- ``pooled``: the stride-32 map averaged over space, (views, C') float16 — the global branch reads only that
  average (FashionNet.forward_features pools it first), so the 7x7 map itself would be 49x the bytes for nothing;
- ``size``: the source image's (width, height), to turn pixel landmarks into fractions.

The key hashes the backbone's weights, its name, the input size, the number of views and the augmentation
version; the file name is the hash of the image's bytes. Change any of them and the entry is simply not found
(a miss), so a stale feature is never read. Files are written to a temporary name and renamed, so a killed
phase 1 leaves only whole entries, and rerunning it computes just the missing ones.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm.auto import tqdm

from shared.data.records import Benchmark, ImageRecord
from shared.fashionnet.backbones import Backbone
from shared.fashionnet.preprocess import normalize
from shared.training.views import AUGMENT_VERSION, render_view

DEFAULT_CACHE_DIR = Path("var/cache/trunk")


def weights_digest(module: torch.nn.Module) -> str:
    """A hash of every tensor in the module's state, in order: different weights, different cache."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def cache_key(backbone: Backbone, backbone_name: str, input_size: int, views: int) -> str:
    parts = f"{backbone_name}|{weights_digest(backbone)}|{input_size}|{views}|aug{AUGMENT_VERSION}"
    return f"{backbone_name}-{input_size}px-{views}v-" + hashlib.sha256(parts.encode()).hexdigest()[:16]


def content_hash(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@dataclass
class CachedImage:
    mid: np.ndarray  # (views, C, h, w) float16
    pooled: np.ndarray  # (views, C') float16
    size: tuple[int, int]  # source width, height


@dataclass
class CacheStats:
    hits: int = 0
    misses: int = 0
    bytes: int = 0

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def describe(self) -> str:
        return (f"{self.hits + self.misses} images, {self.hits} cached before ({self.hit_rate:.0%} hit rate), "
                f"{self.misses} computed, {self.bytes / 2**20:.0f} MiB")


class TrunkCache:
    """Cached backbone features of one backbone, input size and view count (one key)."""

    def __init__(self, root: Path, key: str) -> None:
        self.dir = Path(root) / key
        self.stats = CacheStats()

    def path(self, digest: str) -> Path:
        return self.dir / digest[:2] / f"{digest}.npz"

    def load(self, digest: str) -> CachedImage | None:
        path = self.path(digest)
        if not path.is_file():
            return None
        try:
            with np.load(path) as blob:
                entry = CachedImage(blob["mid"], blob["pooled"], (int(blob["size"][0]), int(blob["size"][1])))
        except (OSError, ValueError, KeyError, EOFError):
            return None  # a torn or foreign file is a miss: recomputed and overwritten
        self.stats.bytes += path.stat().st_size
        return entry

    def save(self, digest: str, entry: CachedImage) -> None:
        path = self.path(digest)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f"{path.stem}.{os.getpid()}.tmp.npz")
        np.savez(tmp, mid=entry.mid, pooled=entry.pooled, size=np.array(entry.size, np.int32))
        tmp.replace(path)
        self.stats.bytes += path.stat().st_size


class _ViewDataset(Dataset):
    """Decodes an image and renders its views; runs in DataLoader workers, beside the backbone."""

    def __init__(self, paths: Sequence[Path], digests: Sequence[str], views: int, input_size: int) -> None:
        self.paths, self.digests, self.views, self.input_size = list(paths), list(digests), views, input_size

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[int, np.ndarray, tuple[int, int]]:
        with Image.open(self.paths[index]) as image:
            image.load()
            size = image.size
            pixels = np.stack([render_view(image, self.digests[index], v, self.input_size)
                               for v in range(self.views)])
        return index, pixels, size


def _collate(samples):
    return samples


def build_cache(bench: Benchmark, records: Sequence[ImageRecord], backbone: Backbone, *, cache: TrunkCache,
                views: int, input_size: int, mean: tuple, std: tuple, batch_views: int = 64,
                workers: int = 1, progress: bool = True, desc: str = "phase 1: caching backbone features",
                ) -> tuple[list[CachedImage], list[str]]:
    """Features of every record's views, in record order (read from the cache or computed and stored), and
    the content hash of each record's image."""
    # Outside inference mode: parameters converted inside it would become inference tensors, which phase 3
    # (fine-tuning the last stage) could then not train.
    backbone = backbone.eval().to(memory_format=torch.channels_last)
    paths = [bench.path(r) for r in records]
    digests = [content_hash(p) for p in paths]
    entries: list[CachedImage | None] = [cache.load(d) for d in digests]
    todo = [i for i, e in enumerate(entries) if e is None]
    cache.stats.hits += len(records) - len(todo)
    cache.stats.misses += len(todo)
    bar = tqdm(total=len(records), initial=len(records) - len(todo), disable=not progress, desc=desc, unit="img")
    if todo:
        dataset = _ViewDataset([paths[i] for i in todo], [digests[i] for i in todo], views, input_size)
        per_batch = max(1, batch_views // views)
        loader = DataLoader(dataset, batch_size=per_batch, collate_fn=_collate, num_workers=workers,
                            persistent_workers=False)
        for batch in loader:
            pixels = np.concatenate([p for _, p, _ in batch])
            x = normalize(pixels, mean, std).contiguous(memory_format=torch.channels_last)
            with torch.inference_mode():
                mid, top = backbone(x)
            mid = mid.float().numpy().astype(np.float16)
            pooled = top.mean(dim=(2, 3)).float().numpy().astype(np.float16)
            for j, (local, _, size) in enumerate(batch):
                entry = CachedImage(np.ascontiguousarray(mid[j * views:(j + 1) * views]),
                                    pooled[j * views:(j + 1) * views], size)
                cache.save(digests[todo[local]], entry)
                entries[todo[local]] = entry
            bar.update(len(batch))
            bar.set_postfix_str(f"hit rate {cache.stats.hit_rate:.0%}, {cache.stats.bytes / 2**20:.0f} MiB")
    bar.close()
    return entries, digests  # type: ignore[return-value]
