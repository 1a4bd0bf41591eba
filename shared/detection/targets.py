"""Training targets of the garment head (CenterNet's) and its loss: focal loss on the centre heatmaps, L1 on
log box size and centre offset at each garment's centre cell."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from shared.detection.head import NUM_CLASSES

MAX_OBJECTS = 6


def gaussian_radius(height: float, width: float, min_overlap: float = 0.7) -> float:
    """CenterNet's radius (in cells) within which a corner-shifted box still overlaps the truth by ``min_overlap``."""
    a1, b1 = 1.0, height + width
    c1 = width * height * (1 - min_overlap) / (1 + min_overlap)
    r1 = (b1 + math.sqrt(b1 ** 2 - 4 * a1 * c1)) / 2
    a2, b2 = 4.0, 2 * (height + width)
    c2 = (1 - min_overlap) * width * height
    r2 = (b2 + math.sqrt(b2 ** 2 - 4 * a2 * c2)) / 2
    a3, b3 = 4 * min_overlap, -2 * min_overlap * (height + width)
    c3 = (min_overlap - 1) * width * height
    r3 = (b3 + math.sqrt(b3 ** 2 - 4 * a3 * c3)) / 2
    return max(0.0, min(r1, r2, r3))


def encode(boxes: Sequence[tuple[float, float, float, float]], classes: Sequence[int], h: int,
           w: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Boxes (fractions) and class indices of one image -> heatmap (C, h, w), centre cell index (M,),
    regression target (M, 4: log w, log h, offset x, offset y) and mask (M,)."""
    heat = np.zeros((NUM_CLASSES, h, w), np.float32)
    index = np.zeros(MAX_OBJECTS, np.int64)
    reg = np.zeros((MAX_OBJECTS, 4), np.float32)
    mask = np.zeros(MAX_OBJECTS, np.float32)
    ys, xs = np.mgrid[0:h, 0:w]
    for k, ((x1, y1, x2, y2), c) in enumerate(zip(boxes, classes, strict=True)):
        if k >= MAX_OBJECTS or x2 <= x1 or y2 <= y1:
            continue
        cx, cy = (x1 + x2) / 2 * w, (y1 + y2) / 2 * h
        ix, iy = min(int(cx), w - 1), min(int(cy), h - 1)
        sigma = (2 * gaussian_radius((y2 - y1) * h, (x2 - x1) * w) + 1) / 6
        blob = np.exp(-((xs - ix) ** 2 + (ys - iy) ** 2) / (2 * sigma ** 2))
        heat[c] = np.maximum(heat[c], blob)
        index[k] = iy * w + ix
        reg[k] = (math.log(x2 - x1), math.log(y2 - y1), cx - ix, cy - iy)
        mask[k] = 1.0
    return heat, index, reg, mask


def detection_loss(maps: torch.Tensor, heat: torch.Tensor, index: torch.Tensor, reg: torch.Tensor,
                   mask: torch.Tensor, *, size_weight: float = 1.0, offset_weight: float = 1.0) -> torch.Tensor:
    """CenterNet's loss on a batch: (B, C+4, h, w) maps against ``encode``'s targets (batched)."""
    logits = maps[:, :NUM_CLASSES]
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = heat.eq(1.0).float()
    pos_loss = -(torch.log(prob) * (1 - prob) ** 2 * positive).sum()
    neg_loss = -(torch.log(1 - prob) * prob ** 2 * (1 - heat) ** 4 * (1 - positive)).sum()
    count = positive.sum().clamp(min=1.0)
    b, _, h, w = maps.shape
    flat = maps[:, NUM_CLASSES:].reshape(b, 4, h * w)
    picked = flat.gather(2, index[:, None, :].expand(b, 4, index.shape[1])).permute(0, 2, 1)  # (B, M, 4)
    weights = mask[..., None]
    denom = mask.sum().clamp(min=1.0)
    size = (F.l1_loss(picked[..., :2], reg[..., :2], reduction="none") * weights).sum() / denom
    offset = (F.l1_loss(torch.sigmoid(picked[..., 2:]), reg[..., 2:], reduction="none") * weights).sum() / denom
    return (pos_loss + neg_loss) / count + size_weight * size + offset_weight * offset
