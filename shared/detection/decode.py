"""Boxes from the head's maps (numpy only: serving decodes what ONNX Runtime returns)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from shared.vocabulary import GARMENT_CLASSES

NUM_CLASSES = len(GARMENT_CLASSES)
DEFAULT_THRESHOLD = 0.3
MAX_GARMENTS = 8


@dataclass(frozen=True)
class Detection:
    box: tuple[float, float, float, float]  # x1, y1, x2, y2 as fractions of the image, clipped to [0, 1]
    garment_class: str  # one of GARMENT_CLASSES
    score: float


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(x, -30, 30)))


def decode_maps(maps: np.ndarray, *, threshold: float = DEFAULT_THRESHOLD,
                max_garments: int = MAX_GARMENTS) -> list[Detection]:
    """One image's (MAP_CHANNELS, h, w) maps -> detections, best first: local maxima (3 x 3) of each class's
    heatmap above ``threshold``, CenterNet's peak extraction in place of non-maximum suppression."""
    maps = np.asarray(maps, np.float32)
    heat = _sigmoid(maps[:NUM_CLASSES])
    _, h, w = heat.shape
    padded = np.pad(heat, ((0, 0), (1, 1), (1, 1)), constant_values=-1.0)
    neighbours = np.stack([padded[:, dy:dy + h, dx:dx + w] for dy in range(3) for dx in range(3)])
    peaks = (heat >= neighbours.max(axis=0)) & (heat >= threshold)
    classes, ys, xs = np.nonzero(peaks)
    scores = heat[classes, ys, xs]
    order = np.argsort(-scores, kind="stable")[:max_garments]
    out = []
    for k in order:
        c, y, x = int(classes[k]), int(ys[k]), int(xs[k])
        bw, bh = np.exp(maps[NUM_CLASSES:NUM_CLASSES + 2, y, x])
        ox, oy = _sigmoid(maps[NUM_CLASSES + 2:NUM_CLASSES + 4, y, x])
        cx, cy = (x + ox) / w, (y + oy) / h
        box = tuple(float(np.clip(v, 0.0, 1.0)) for v in (cx - bw / 2, cy - bh / 2, cx + bw / 2, cy + bh / 2))
        if box[2] > box[0] and box[3] > box[1]:
            out.append(Detection(box, GARMENT_CLASSES[c], float(scores[k])))  # type: ignore[arg-type]
    return out
