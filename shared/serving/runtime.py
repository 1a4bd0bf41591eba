"""The serving model runtime: loaded model versions, one batched forward pass per image, hot swap.

One FashionNet forward yields landmarks, category, attributes and the embedding together, so every model
service in a process shares one runtime and an image never goes through the backbone twice. Concurrent
requests are grouped by a DynamicBatcher. Several versions can be loaded at once: search must embed a
query with the version that built the collection it reads, even while a promotion swaps the default.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from shared.detection.decode import DEFAULT_THRESHOLD as GARMENT_THRESHOLD
from shared.detection.decode import Detection, decode_maps
from shared.errors import NotFound
from shared.fashionnet.checkpoint import ModelMetadata, load_checkpoint
from shared.fashionnet.inference import InferenceEngine, create_engine
from shared.fashionnet.preprocess import image_to_array, normalize
from shared.grpc.batcher import DynamicBatcher
from shared.vocabulary import LANDMARK_NAMES, LANDMARK_SLOTS, VIS_ABSENT

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LandmarkPrediction:
    name: str
    x: float  # fraction of the image width
    y: float
    visibility: int  # VIS_* code
    visibility_score: float  # probability of the predicted visibility class


@dataclass(frozen=True)
class Analysis:
    version: str
    embedding: np.ndarray  # (D,) float32, L2-normalised
    landmarks: tuple[LandmarkPrediction, ...]
    categories: tuple[tuple[str, float], ...]  # (name, probability), best first
    attributes: tuple[tuple[str, str, float], ...]  # (name, group, probability), best first
    garments: tuple[Detection, ...] = ()  # the detector's garments, best first; () when the model has none

    def category(self) -> tuple[str, float]:
        return self.categories[0]

    def attributes_above(self, threshold: float) -> list[tuple[str, str, float]]:
        return [a for a in self.attributes if a[2] >= threshold]


class LoadedModel:
    """One model version ready to serve: metadata + engine. Immutable once built."""

    def __init__(self, metadata: ModelMetadata, engine: InferenceEngine, checkpoint: Path | None, *,
                 garment_threshold: float = GARMENT_THRESHOLD) -> None:
        self.metadata = metadata
        self.garment_threshold = garment_threshold
        self.engine = engine
        self.checkpoint = checkpoint
        self.version = metadata.version

    @classmethod
    def from_checkpoint(cls, path: str | Path, *, engine: str = "auto", cache_dir: Path | None = None,
                        device: str | None = None, garment_threshold: float = GARMENT_THRESHOLD) -> LoadedModel:
        model, metadata = load_checkpoint(path)
        eng = create_engine(model, engine, input_size=metadata.input_size,
                            cache_dir=cache_dir or Path(path).parent, cache_key=metadata.version,
                            device=torch.device(device) if device else None)
        log.info("loaded model %s from %s (%s engine)", metadata.version, path, eng.kind)
        return cls(metadata, eng, Path(path), garment_threshold=garment_threshold)

    def analyze(self, images: list[Image.Image]) -> list[Analysis]:
        return self.analyze_prepared([self.prepare(im) for im in images])

    def prepare(self, image: Image.Image) -> np.ndarray:
        """The per-image half of preprocessing (RGB, resized, HWC uint8): thread-safe, PIL releases the GIL."""
        return image_to_array(image, self.metadata.input_size)

    def analyze_prepared(self, pixels: list[np.ndarray]) -> list[Analysis]:
        """Analyses of images already `prepare`d: normalise the batch, run the engine, decode the heads."""
        meta = self.metadata
        batch = normalize(np.stack(pixels), meta.mean, meta.std)
        out = self.engine.run(batch)
        cat_prob = out.category_logits.softmax(-1).numpy()
        attr_prob = out.attribute_logits.sigmoid().numpy()
        vis_prob = out.visibility_logits.softmax(-1).numpy()
        coords = out.landmarks.numpy()
        embedding = out.embedding.numpy().astype(np.float32)
        maps = out.garment_maps.numpy() if out.garment_maps is not None else None
        results = []
        for i in range(len(pixels)):
            cat_order = np.argsort(-cat_prob[i], kind="stable")
            attr_order = np.argsort(-attr_prob[i], kind="stable")
            vis = vis_prob[i].argmax(-1)
            # Landmarks the predicted category's clothes type does not have (a skirt's collar) are ABSENT.
            defined = LANDMARK_SLOTS[meta.categories[cat_order[0]].clothes_type]
            results.append(Analysis(
                version=self.version,
                embedding=embedding[i],
                landmarks=tuple(LandmarkPrediction(name, float(coords[i, k, 0]), float(coords[i, k, 1]),
                                                   int(vis[k]) if k in defined else VIS_ABSENT,
                                                   float(vis_prob[i, k, vis[k]]))
                                for k, name in enumerate(LANDMARK_NAMES)),
                categories=tuple((meta.categories[j].name, float(cat_prob[i, j])) for j in cat_order),
                attributes=tuple((meta.attributes[j].name, meta.attributes[j].group, float(attr_prob[i, j]))
                                 for j in attr_order),
                garments=tuple(decode_maps(maps[i], threshold=self.garment_threshold)) if maps is not None else (),
            ))
        return results


class ModelRuntime:
    """Holds loaded versions and the default one; batches concurrent `analyze` calls.

    Swapping the default is one reference assignment under a lock: requests in flight finish on the
    version they started with, new ones get the new version, none fails.
    """

    def __init__(self, *, engine: str = "auto", max_batch: int = 32, max_wait_ms: float = 0.0,
                 device: str | None = None, cache_dir: Path | None = None,
                 garment_threshold: float = GARMENT_THRESHOLD) -> None:
        self._engine_kind = engine
        self._garment_threshold = garment_threshold
        self._device = device
        self._cache_dir = cache_dir
        self._models: dict[str, LoadedModel] = {}
        self._default: str | None = None
        self._lock = threading.Lock()
        self._batcher: DynamicBatcher[tuple[Image.Image, str], Analysis] = DynamicBatcher(
            self._run_batch, max_batch=max_batch, max_wait_ms=max_wait_ms, name="fashionnet")

    # -- versions -------------------------------------------------------------------------------------------
    def load(self, checkpoint: str | Path, *, make_default: bool = False) -> LoadedModel:
        loaded = LoadedModel.from_checkpoint(checkpoint, engine=self._engine_kind, cache_dir=self._cache_dir,
                                             device=self._device, garment_threshold=self._garment_threshold)
        with self._lock:
            self._models[loaded.version] = loaded
            if make_default or self._default is None:
                self._default = loaded.version
        return loaded

    def add(self, loaded: LoadedModel, *, make_default: bool = False) -> None:
        with self._lock:
            self._models[loaded.version] = loaded
            if make_default or self._default is None:
                self._default = loaded.version

    def set_default(self, version: str) -> None:
        with self._lock:
            if version not in self._models:
                raise NotFound(f"model version {version!r} is not loaded; loaded: {sorted(self._models)}")
            self._default = version

    def unload(self, version: str) -> None:
        with self._lock:
            if version == self._default:
                raise NotFound(f"cannot unload the default model version {version!r}")
            self._models.pop(version, None)

    def get(self, version: str | None = None) -> LoadedModel:
        with self._lock:
            key = version or self._default
            if key is None:
                raise NotFound("no model is loaded: expected a checkpoint to be loaded at start-up")
            try:
                return self._models[key]
            except KeyError:
                raise NotFound(f"model version {key!r} is not loaded; loaded: {sorted(self._models)}") from None

    @property
    def default_version(self) -> str | None:
        return self._default

    def versions(self) -> list[str]:
        with self._lock:
            return sorted(self._models)

    # -- inference ------------------------------------------------------------------------------------------
    def analyze(self, images: list[Image.Image], version: str | None = None,
                timeout: float | None = 60.0) -> list[Analysis]:
        """Analyse images with `version` (default: the serving one), batched with concurrent callers."""
        if not images:
            return []
        model = self.get(version)  # pin the version now, so a swap mid-queue cannot change it
        # Resize in the caller's thread: concurrent callers (gRPC threads, the ingest pipeline) prepare their
        # images in parallel while the batcher's thread keeps the model busy (it was 12% of that thread, serial).
        return self._batcher.submit_many([(model.prepare(im), model.version) for im in images], timeout=timeout)

    def _run_batch(self, items: list[tuple[np.ndarray, str]]) -> list[Analysis]:
        results: list[Analysis | None] = [None] * len(items)
        by_version: dict[str, list[int]] = {}
        for i, (_, version) in enumerate(items):
            by_version.setdefault(version, []).append(i)
        for version, indices in by_version.items():
            analyses = self.get(version).analyze_prepared([items[i][0] for i in indices])
            for i, analysis in zip(indices, analyses, strict=True):
                results[i] = analysis
        return results  # type: ignore[return-value]

    def close(self) -> None:
        self._batcher.close()
