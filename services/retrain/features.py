"""The frozen backbone's features for every image a retraining run may draw, computed once per image.

No retraining level trains the backbone's stride-16 stage (see ``config.UNFREEZE``), so its output for an image
never changes during a run: ``embedding`` and ``fusion`` leave the whole backbone frozen, ``top`` trains only
the last stage, which runs on the cached stride-16 map. ``finetune`` therefore runs the backbone once per
distinct image, in its plain and its mirrored rendering (click batches flip rows at random, and a backbone's
output is not exactly the mirror of its output on the mirrored image), and trains with
``model.forward_trunk(mid, pooled)``.

Entries are ``shared.training.trunk_cache`` entries with two views (0 plain, 1 mirrored), keyed by
``cache_key(backbone, name, input size, 2)`` and named by the SHA-256 of the uint8 pixels the backbone reads
and their normalisation, so a resumed run (or the next run on the same serving model) reads them from disk
instead of recomputing, and any change of weights, input size, normalisation or decoding is a miss, never a
stale feature. Float16 on disk and in memory alike, so an uninterrupted and a resumed run train on the very
same numbers. All of a run's features stay in memory (about 2 x 45 KB an image at 224 px with EfficientNet-Lite0).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from shared.fashionnet.backbones import Backbone
from shared.fashionnet.checkpoint import ModelMetadata
from shared.fashionnet.model import FashionNetOutput
from shared.fashionnet.preprocess import normalize
from shared.fashionnet.registry import backbone_of
from shared.training.trunk_cache import CachedImage, TrunkCache, cache_key

PLAIN, MIRRORED = 0, 1
VIEWS = 2


def _trains(module: nn.Module) -> bool:
    return any(param.requires_grad for param in module.parameters())


def uses_cached_features(model: nn.Module) -> bool:
    """Whether the backbone's stride-16 stage stays frozen (after ``prepare_for_finetuning``), so its features
    can be computed once per image."""
    return hasattr(model, "forward_trunk") and not _trains(model.backbone.mid)


def input_hash(array: np.ndarray, mean: tuple, std: tuple) -> str:
    """SHA-256 of the (H, W, 3) uint8 pixels, their shape and the normalisation: the backbone's whole input."""
    digest = hashlib.sha256(f"{array.shape}|{array.dtype}|{tuple(mean)}|{tuple(std)}|".encode())
    digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()


@torch.inference_mode()
def backbone_features(backbone: Backbone, arrays: Sequence[np.ndarray], mean: tuple, std: tuple,
                      device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, C, h, w) stride-16 maps and (N, 2, C') pooled stride-32 features, float16, of each image and its
    mirror image: exactly what ``model.backbone(x)`` gives (``pooled`` = ``top.mean((2, 3))``), rounded."""
    pixels = np.stack([view for a in arrays for view in (a, a[:, ::-1])])
    mid, top = backbone(normalize(pixels, mean, std).to(device))
    pooled = top.mean(dim=(2, 3))
    n = len(arrays)
    return (mid.float().cpu().numpy().astype(np.float16).reshape(n, VIEWS, *mid.shape[1:]),
            pooled.float().cpu().numpy().astype(np.float16).reshape(n, VIEWS, -1))


class TrunkFeatures:
    """Cached backbone features by image key (the ``ImageBank``'s ``photo:...`` / ``uri:...`` names).

    ``prepare`` decodes every image a run may draw, looks each up on disk and runs the backbone on the rest;
    afterwards ``readable`` answers which images decoded and ``batch`` stacks the rows of one step.
    """

    def __init__(self, backbone: Backbone, *, backbone_name: str, input_size: int, mean: tuple, std: tuple,
                 cache_dir: Path, device: torch.device, batch_images: int = 32) -> None:
        self.backbone = backbone
        self.mean, self.std = mean, std
        self.device = device
        self.batch_images = batch_images
        self.cache = TrunkCache(cache_dir, cache_key(backbone, backbone_name, input_size, VIEWS))
        self._entries: dict[str, CachedImage | None] = {}  # by image key; None = unreadable
        self._by_digest: dict[str, CachedImage] = {}  # one entry per distinct picture, however many keys name it

    @classmethod
    def for_model(cls, model: nn.Module, metadata: ModelMetadata, *, cache_dir: Path,
                  device: torch.device) -> TrunkFeatures:
        """Features of ``model``'s backbone as it is now (call before any training step or resume)."""
        return cls(model.backbone, backbone_name=backbone_of(metadata.architecture), input_size=metadata.input_size,
                   mean=metadata.mean, std=metadata.std, cache_dir=cache_dir, device=device)

    def prepare(self, keys: Iterable[str], load: Callable[[str], np.ndarray | None], *, desc: str,
                progress_bar: bool = True, tick: Callable[[], None] | None = None) -> None:
        """Features of every key (from memory, disk, or computed in batches and stored). ``load`` decodes a key
        to the model's uint8 input (None when unreadable); ``tick`` is called after every computed batch."""
        wanted = [k for k in dict.fromkeys(keys) if k not in self._entries]
        todo: list[tuple[str, str, np.ndarray]] = []
        bar = tqdm(wanted, desc=desc, unit="img", disable=not progress_bar)
        for key in bar:
            array = load(key)
            if array is None:
                self._entries[key] = None
                continue
            digest = input_hash(array, self.mean, self.std)
            entry = self._by_digest.get(digest) or self.cache.load(digest)
            if entry is None:
                if any(d == digest for _, d, _ in todo):
                    self.cache.stats.hits += 1  # the same picture again in this batch: computed once
                else:
                    self.cache.stats.misses += 1
                todo.append((key, digest, array))
                if len(todo) >= self.batch_images:
                    self._compute(todo, tick)
                    bar.set_postfix_str(self.cache.stats.describe())
                    todo = []
                continue
            self.cache.stats.hits += 1
            self._by_digest[digest] = entry
            self._entries[key] = entry
        if todo:
            self._compute(todo, tick)
        bar.close()

    def _compute(self, todo: list[tuple[str, str, np.ndarray]], tick: Callable[[], None] | None) -> None:
        distinct = {digest: array for _, digest, array in todo}
        mid, pooled = backbone_features(self.backbone, list(distinct.values()), self.mean, self.std, self.device)
        for i, (digest, array) in enumerate(distinct.items()):
            entry = CachedImage(np.ascontiguousarray(mid[i]), np.ascontiguousarray(pooled[i]),
                                (array.shape[1], array.shape[0]))
            self.cache.save(digest, entry)
            self._by_digest[digest] = entry
        for key, digest, _ in todo:
            self._entries[key] = self._by_digest[digest]
        if tick is not None:
            tick()

    def readable(self, key: str) -> bool:
        if key not in self._entries:
            raise KeyError(f"expected image {key!r} among the prepared features (TrunkFeatures.prepare)")
        return self._entries[key] is not None

    def batch(self, rows: Sequence[tuple[str, bool]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(mid, pooled) float32 on the device for rows of (image key, mirrored)."""
        entries = [(self._entries[key], MIRRORED if flip else PLAIN) for key, flip in rows]
        mid = torch.from_numpy(np.stack([e.mid[v] for e, v in entries]))
        pooled = torch.from_numpy(np.stack([e.pooled[v] for e, v in entries]))
        return mid.to(self.device).float(), pooled.to(self.device).float()

    def forward(self, model: nn.Module, teacher: nn.Module | None,
                rows: Sequence[tuple[str, bool]]) -> tuple[FashionNetOutput, FashionNetOutput | None]:
        """The model's output (and the teacher's, without gradients) from the rows' cached features.

        When the last backbone stage trains (``unfreeze="top"``) the model runs it on the cached stride-16 map;
        the teacher holds the serving weights, whose pooled features are the cached ones.
        """
        mid, pooled = self.batch(rows)
        if _trains(model.backbone.top):
            trained = F.adaptive_avg_pool2d(model.backbone.top(mid), 1).flatten(1)
            out = model.forward_trunk(mid, trained)
        else:
            out = model.forward_trunk(mid, pooled)
        with torch.no_grad():
            kept = teacher.forward_trunk(mid, pooled) if teacher is not None else None
        return out, kept

    def describe(self) -> str:
        return f"backbone features {self.cache.dir}: {self.cache.stats.describe()}"
