"""Detection average precision at an IoU threshold, per class (PASCAL VOC's all-point interpolation)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Box = tuple[float, float, float, float]


def iou(a: Box, b: Box) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def average_precision(detections: Sequence[Sequence[tuple[Box, float]]], truths: Sequence[Sequence[Box]],
                      threshold: float = 0.5) -> float:
    """AP of one class: ``detections[i]`` (box, score) and ``truths[i]`` boxes of image i. Each truth is matched
    once, by the highest-scoring detection over ``threshold`` IoU; NaN when there is no truth."""
    total = sum(len(t) for t in truths)
    if total == 0:
        return float("nan")
    ranked = sorted(((score, i, box) for i, dets in enumerate(detections) for box, score in dets),
                    key=lambda t: -t[0])
    used = [np.zeros(len(t), bool) for t in truths]
    hits = np.zeros(len(ranked))
    for k, (_, i, box) in enumerate(ranked):
        overlaps = [iou(box, t) for t in truths[i]]
        if overlaps:
            j = int(np.argmax(overlaps))
            if overlaps[j] >= threshold and not used[i][j]:
                used[i][j] = True
                hits[k] = 1
    if not len(ranked):
        return 0.0
    tp = np.cumsum(hits)
    recall = tp / total
    precision = tp / np.arange(1, len(ranked) + 1)
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    previous = np.concatenate([[0.0], recall[:-1]])
    return float(np.sum((recall - previous) * envelope))
