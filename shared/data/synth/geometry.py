"""3x3 homographies applied identically to points (landmarks) and to pixels (``Image.transform``).

Coordinates are continuous pixel coordinates: pixel (i, j) covers [i, i + 1) x [j, j + 1), its centre is at
(i + 0.5, j + 0.5). PIL's PERSPECTIVE transform samples each output pixel centre at the input position given by
the coefficients, in the same convention, so a point mapped by ``H`` lands where its pixel is drawn.
"""

from __future__ import annotations

import math

import numpy as np
from PIL import Image


def translation(tx: float, ty: float) -> np.ndarray:
    return np.array([[1.0, 0.0, tx], [0.0, 1.0, ty], [0.0, 0.0, 1.0]])


def scaling(sx: float, sy: float | None = None) -> np.ndarray:
    return np.diag([sx, sx if sy is None else sy, 1.0])


def rotation(degrees: float) -> np.ndarray:
    """Counter-clockwise on screen (y points down, so this is clockwise in maths convention)."""
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return np.array([[c, s, 0.0], [-s, c, 0.0], [0.0, 0.0, 1.0]])


def projective(px: float, py: float) -> np.ndarray:
    """Pure perspective term: x' = x / (1 + px*x + py*y); use on coordinates centred and normalised to ~[-1, 1]."""
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [px, py, 1.0]])


def compose(*matrices: np.ndarray) -> np.ndarray:
    """``compose(A, B, C)`` applies C first, then B, then A (matrix product order)."""
    out = np.eye(3)
    for m in matrices:
        out = out @ m
    return out


def apply(h: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (N, 2) points; NaN rows stay NaN."""
    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    homog = np.concatenate([pts, np.ones((len(pts), 1))], axis=1) @ h.T
    return homog[:, :2] / homog[:, 2:3]


def local_scale(h: np.ndarray, at: np.ndarray) -> float:
    """Approximate isotropic scale of ``h`` around a point (for line widths drawn after the warp)."""
    at = np.asarray(at, dtype=np.float64)
    p = apply(h, np.stack([at, at + [1.0, 0.0], at + [0.0, 1.0]]))
    jac = np.stack([p[1] - p[0], p[2] - p[0]], axis=1)
    return float(math.sqrt(abs(np.linalg.det(jac))))


def is_mirrored(h: np.ndarray) -> bool:
    return bool(np.linalg.det(h[:2, :2]) < 0)


def warp(image: Image.Image, h: np.ndarray, size: tuple[int, int], resample: int = Image.BICUBIC) -> Image.Image:
    """Render ``image`` through ``h`` (input -> output) onto an output of ``size``; outside stays transparent/black.

    PIL wants the output -> input map, so it gets the inverse, normalised so its last coefficient is 1.
    """
    inv = np.linalg.inv(h)
    inv = inv / inv[2, 2]
    coeffs = tuple(float(v) for v in inv.reshape(-1)[:8])
    return image.transform(size, Image.PERSPECTIVE, coeffs, resample=resample)
