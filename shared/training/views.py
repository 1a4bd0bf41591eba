"""Augmented views of a training image, for the trunk-feature cache.

A view is a random affine crop (scale, aspect, shift, a little rotation, mirror) followed by the photometric
damage consumer photos suffer (the generator's own lighting, colour cast, noise and blur; a random patch for an
occluder). View 0 is always the clean image exactly as evaluation and serving see it.

A view's parameters depend only on the image's content hash and the view number, never on the training seed:
every run, seed and ablation over the same images reuses the same cached backbone features.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

from shared.data.synth.photos import consumer_camera
from shared.fashionnet.preprocess import image_to_array
from shared.vocabulary import VIS_ABSENT, VIS_TRUNCATED

# Bump when what a view looks like changes: it is part of the cache key, so old caches are never mixed in.
AUGMENT_VERSION = 1
# Mirroring an image swaps left and right landmarks: collar, sleeve, waistline and hem pairs.
FLIP_ORDER = (1, 0, 3, 2, 5, 4, 7, 6)


@dataclass(frozen=True)
class ViewParams:
    affine: np.ndarray  # (3, 3): view fraction coordinates (u, v, 1) -> source fraction coordinates (x, y, 1)
    flip: bool
    photometric: bool
    erase: bool


def view_params(content_hash: str, view: int) -> ViewParams:
    """Deterministic per (image content, view); view 0 is the identity."""
    if view == 0:
        return ViewParams(np.eye(3), False, False, False)
    rng = np.random.default_rng([int(content_hash[:15], 16), view])
    scale = math.sqrt(rng.uniform(0.5, 1.0))  # share of the side kept: 50-100 % of the area
    aspect = math.exp(rng.uniform(-0.2, 0.2))
    w, h = min(1.0, scale * aspect), min(1.0, scale / aspect)
    cx, cy = rng.uniform(w / 2, 1 - w / 2), rng.uniform(h / 2, 1 - h / 2)
    theta = math.radians(rng.uniform(-12, 12))
    flip = bool(rng.random() < 0.5)
    c, s = math.cos(theta), math.sin(theta)
    # source = centre + R(theta) @ diag(w, h) @ ((u - 0.5) * mirror, v - 0.5)
    mirror = -1.0 if flip else 1.0
    affine = (np.array([[1, 0, cx], [0, 1, cy], [0, 0, 1]]) @ np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])
              @ np.diag([w * mirror, h, 1.0]) @ np.array([[1, 0, -0.5], [0, 1, -0.5], [0, 0, 1]]))
    return ViewParams(affine, flip, bool(rng.random() < 0.6), bool(rng.random() < 0.3))


def render_view(image: Image.Image, content_hash: str, view: int, input_size: int) -> np.ndarray:
    """(input_size, input_size, 3) uint8 pixels of one view."""
    image = image.convert("RGB")
    params = view_params(content_hash, view)
    if view == 0:
        return image_to_array(image, input_size)
    width, height = image.size
    # PIL wants output pixel -> input pixel; ours maps fractions, so scale on both sides.
    to_pixels = np.diag([width, height, 1.0]) @ params.affine @ np.diag([1 / input_size, 1 / input_size, 1.0])
    out = image.transform((input_size, input_size), Image.AFFINE, tuple(to_pixels[:2].reshape(-1)),
                          resample=Image.BILINEAR, fillcolor=(128, 128, 128))
    rng = np.random.default_rng([int(content_hash[:15], 16), view, 1])
    if params.photometric:
        out = consumer_camera(out, rng)
    if params.erase:
        _erase(out, rng)
    return np.asarray(out)


def _erase(image: Image.Image, rng: np.random.Generator) -> None:
    """A random flat-coloured polygon over part of the picture, like a bag or an arm in a shopper photo."""
    size = image.size[0]
    cx, cy = rng.uniform(0.2, 0.8, 2) * size
    angles = np.sort(rng.uniform(0, 2 * math.pi, 6))
    radii = rng.uniform(0.06, 0.16, 6) * size
    polygon = [(cx + r * math.cos(a), cy + r * math.sin(a)) for a, r in zip(angles, radii, strict=True)]
    ImageDraw.Draw(image).polygon(polygon, fill=tuple(int(v) for v in rng.integers(0, 256, 3)))


def transform_landmarks(landmarks: np.ndarray, visibility: np.ndarray,
                        params: ViewParams) -> tuple[np.ndarray, np.ndarray]:
    """Landmarks (8, 2) as fractions of the source image -> fractions of the view, with visibility updated.

    A landmark the view cut off becomes truncated (no position loss, as in DeepFashion's own annotation);
    a mirrored view swaps left and right slots.
    """
    inverse = np.linalg.inv(params.affine)
    points = np.c_[landmarks, np.ones(len(landmarks))] @ inverse.T
    out = points[:, :2].astype(np.float32)
    vis = visibility.copy()
    outside = ((out < 0) | (out > 1)).any(axis=1) & (vis != VIS_ABSENT)
    vis[outside] = VIS_TRUNCATED
    if params.flip:
        out, vis = out[list(FLIP_ORDER)], vis[list(FLIP_ORDER)]
    out[vis == VIS_ABSENT] = 0.0
    return out, vis
