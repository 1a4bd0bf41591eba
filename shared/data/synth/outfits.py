"""Outfit scenes: one consumer photo of 1-3 garments of different items, worn on a figure or laid flat.

Each garment is the item's own rendered layer (``render.render_layers``, the same pixels its shop photos show),
placed by a homography of its own, so its landmarks move exactly with its pixels as in single-garment photos.
On a figure the garments share one body frame (garment units: neckline at y = 0, a lower garment's waist
``_WAIST`` below it); they are drawn bottom to top (lower, then upper or full body, then the outer layer, open
when something is worn under it), so garments occlude each other the way clothes do. Then the consumer damage of
``photos``: clutter, a wearer, occluders, camera perspective, lighting, noise, blur, low JPEG quality.
"""

from __future__ import annotations

import io
import math
from dataclasses import dataclass

import numpy as np
from PIL import Image

from shared.data.synth import geometry as geo
from shared.data.synth.catalog import STREAM_PLAN, ItemSpec, rng_for
from shared.data.synth.photos import (
    _SWAP,
    _annotate,
    _clutter,
    _draw_head,
    _draw_wearer,
    _occlude,
    _studio,
    consumer_camera,
)
from shared.data.synth.render import Layer
from shared.vocabulary import NUM_LANDMARKS, VIS_TRUNCATED, ClothesType

OUTER_CATEGORIES = frozenset({"Jacket", "Cardigan"})
_WAIST = 0.55  # garment units from the neckline down to where a lower garment's waist sits
_OUTER_GROW = 1.08  # an outer layer is cut a little larger than what it covers
# Which garments make an outfit (drawn in this order) and how often, while items of those classes are left.
_TEMPLATES: tuple[tuple[tuple[str, ...], float], ...] = (
    (("lower", "upper"), 0.35),
    (("lower", "upper", "outer"), 0.2),
    (("full",), 0.12),
    (("full", "outer"), 0.06),
    (("lower", "outer"), 0.1),
    (("upper",), 0.07),
    (("lower",), 0.05),
    (("outer",), 0.05),
)
_MIN_VISIBLE = 0.08  # a garment with less of its own pixels showing is not annotated (nothing left to find)


def garment_class(item: ItemSpec) -> str:
    """The detector class of an item: its clothes type, with jackets and cardigans as ``outer``."""
    if item.spec.name in OUTER_CATEGORIES:
        return "outer"
    return {ClothesType.UPPER: "upper", ClothesType.LOWER: "lower", ClothesType.FULL: "full"}[item.spec.clothes_type]


@dataclass(frozen=True)
class Outfit:
    index: int
    items: tuple[int, ...]  # item indices, in drawing order (bottom layer first)


def plan_outfits(seed: int, specs: list[ItemSpec]) -> list[Outfit]:
    """Every item in exactly one outfit: draw templates while their classes are available, then singles."""
    rng = rng_for(seed, "outfits", STREAM_PLAN, 1 << 20)
    pools: dict[str, list[int]] = {"upper": [], "lower": [], "full": [], "outer": []}
    for spec in specs:
        pools[garment_class(spec)].append(spec.index)
    for pool in pools.values():
        rng.shuffle(pool)
    outfits: list[Outfit] = []
    while any(pools.values()):
        feasible = [(t, w) for t, w in _TEMPLATES
                    if all(t.count(c) <= len(pools[c]) for c in set(t))]
        weights = np.array([w for _, w in feasible])
        template = feasible[int(rng.choice(len(feasible), p=weights / weights.sum()))][0]
        outfits.append(Outfit(len(outfits), tuple(pools[c].pop() for c in template)))
    return outfits


@dataclass
class GarmentResult:
    """One annotated garment of a written outfit photo, in its pixels (DeepFashion2's per-item fields)."""

    position: int  # index into the outfit's items
    bbox: tuple[int, int, int, int]  # x1, y1, x2, y2 inclusive
    landmarks: np.ndarray  # (8, 2) int
    visibility: np.ndarray  # (8,) VIS_* codes, -1 where the clothes type has no such landmark
    scale: int  # 1 small, 2 moderate, 3 large
    occlusion: int  # 1 slight, 2 medium, 3 heavy
    zoom_in: int  # 1 none, 2 medium, 3 large
    viewpoint: int  # 1 not worn, 2 frontal


def render_outfit_photo(specs: list[ItemSpec], layers: list[Layer], size: int, rng: np.random.Generator,
                        *, flat: bool) -> tuple[bytes, list[GarmentResult]]:
    """One JPEG consumer photo of the outfit (``specs`` in drawing order) and its garments' annotations."""
    classes = [garment_class(s) for s in specs]
    images = [layer.image for layer in layers]
    covered = [layer.covered.copy() for layer in layers]
    if not flat and "outer" in classes and {"upper", "full"} & set(classes):
        k = classes.index("outer")
        images[k], cut = _open_front(layers[k])
        covered[k] |= cut
    homographies, mirror = (_flat_lay if flat else _worn)(layers, classes, size, rng)
    background = _studio(size, rng) if flat and rng.random() < 0.6 else _clutter(size, rng)
    head = None
    if not flat:
        main = next((i for i, c in enumerate(classes) if c != "lower"), 0)
        head = _draw_wearer(background, specs[main], layers[main], homographies[main], rng, False)
    photo = background.convert("RGBA")
    alphas = []
    for image, h in zip(images, homographies, strict=True):
        warped = geo.warp(image, h, (size, size))
        alphas.append(np.asarray(warped.getchannel("A")) > 96)
        photo = Image.alpha_composite(photo, warped)
    photo = photo.convert("RGB")
    if head is not None:
        _draw_head(photo, *head)
    occluder = Image.new("L", (size, size), 0)
    if rng.random() < 0.6:
        k = int(rng.integers(len(layers)))
        points = geo.apply(homographies[k], layers[k].garment.landmarks)
        _occlude(photo, occluder, points, specs[k], layers[k], homographies[k], rng)
    photo = consumer_camera(photo, rng)
    hidden = np.asarray(occluder) > 127
    results = []
    for i, (layer, h) in enumerate(zip(layers, homographies, strict=True)):
        above = hidden.copy()
        for later in alphas[i + 1:]:
            above |= later
        result = _annotate_garment(i, layer, h, alphas[i], above, covered[i], size, mirror, flat)
        if result is not None:
            results.append(result)
    buffer = io.BytesIO()
    photo.save(buffer, "JPEG", quality=int(rng.integers(30, 76)))
    return buffer.getvalue(), results


def _annotate_garment(position: int, layer: Layer, h: np.ndarray, alpha: np.ndarray, above: np.ndarray,
                      covered: np.ndarray, size: int, mirror: bool, flat: bool) -> GarmentResult | None:
    own = int(alpha.sum())
    shown = int((alpha & ~above).sum())
    if own == 0 or shown < _MIN_VISIBLE * own or shown < 0.004 * size * size:
        return None
    ys, xs = np.nonzero(alpha)
    bbox = (int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max()))
    points = geo.apply(h, layer.garment.landmarks)
    landmarks, visibility = _annotate(points, covered, above.astype(np.uint8) * 255, size)
    if mirror:
        landmarks, visibility = landmarks[_SWAP], visibility[_SWAP]
    area = (bbox[2] - bbox[0] + 1) * (bbox[3] - bbox[1] + 1) / (size * size)
    hidden = 1.0 - shown / own
    truncated = int((visibility == VIS_TRUNCATED).sum())
    return GarmentResult(
        position, bbox, landmarks, visibility,
        scale=1 if area < 0.1 else 2 if area < 0.3 else 3,
        occlusion=1 if hidden < 0.2 else 2 if hidden < 0.5 else 3,
        zoom_in=1 if truncated == 0 else 2 if truncated <= 2 else 3,
        viewpoint=1 if flat else 2,
    )


def _open_front(layer: Layer) -> tuple[Image.Image, np.ndarray]:
    """The layer worn open: a band down the centre line removed, so the garment under it shows."""
    g = layer.garment
    origin = g.origin if g.origin is not None else np.array(layer.image.size) / 2
    width = 0.11 * g.unit
    canvas = layer.image.size[0]
    x = np.arange(canvas)[None, :] + 0.5
    y = np.arange(canvas)[:, None] + 0.5
    band = (np.abs(x - origin[0]) < width) & (y > origin[1] - 0.02 * g.unit)
    rgba = np.asarray(layer.image).copy()
    rgba[..., 3] = np.where(band, 0, rgba[..., 3])
    cut = np.zeros(NUM_LANDMARKS, bool)
    for slot, (px, py) in enumerate(g.landmarks):
        if np.isfinite(px) and abs(px - origin[0]) < width and py > origin[1] - 0.02 * g.unit:
            cut[slot] = True
    return Image.fromarray(rgba, "RGBA"), cut


def _body_frame(layer: Layer, cls: str) -> np.ndarray:
    """Canvas pixels -> the shared body frame, in garment units."""
    g = layer.garment
    origin = g.origin if g.origin is not None else np.array(layer.image.size) / 2
    grow = _OUTER_GROW if cls == "outer" else 1.0
    dy = _WAIST if cls == "lower" else 0.0
    return geo.compose(geo.translation(0.0, dy), geo.scaling(grow / g.unit), geo.translation(-origin[0], -origin[1]))


def _corners(layer: Layer) -> np.ndarray:
    x0, y0, x1, y1 = layer.mask.getbbox() or (0, 0, *layer.image.size)
    return np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]], np.float64)


def _camera(size: int, rot: float, px: float, py: float, mirror: bool) -> np.ndarray:
    half = size / 2
    return geo.compose(geo.translation(half, half), geo.scaling(half), geo.projective(px, py),
                       geo.scaling(1 / half), geo.rotation(rot), geo.scaling(-1.0 if mirror else 1.0, 1.0),
                       geo.translation(-half, -half))


def _worn(layers: list[Layer], classes: list[str], size: int,
          rng: np.random.Generator) -> tuple[list[np.ndarray], bool]:
    """On a figure: one body frame for every garment, framed and shot like a consumer photo."""
    frames = [_body_frame(layer, c) for layer, c in zip(layers, classes, strict=True)]
    corners = np.concatenate([geo.apply(f, _corners(layer)) for f, layer in zip(frames, layers, strict=True)])
    lo, hi = corners.min(axis=0), corners.max(axis=0)
    fill = rng.uniform(0.74, 0.9) * math.exp(rng.uniform(math.log(0.85), math.log(1.12)))
    scale = fill * size / float(max(hi - lo))
    centre = (lo + hi) / 2 + rng.normal(0, 0.02, 2) * (hi - lo)
    target = size * (0.5 + rng.uniform(-0.06, 0.06, 2))
    squeeze = rng.uniform(0.85, 1.0)
    place = geo.compose(geo.translation(*target), geo.scaling(scale * squeeze, scale),
                        geo.translation(-centre[0], -centre[1]))
    mirror = bool(rng.random() < 0.25)
    camera = _camera(size, float(np.clip(rng.normal(0, 6), -18, 18)), rng.uniform(-0.22, 0.22),
                     rng.uniform(-0.22, 0.22), mirror)
    return [camera @ place @ f for f in frames], mirror


_SLOTS = {
    1: (((0.5, 0.5),),),
    2: (((0.28, 0.5), (0.72, 0.5)), ((0.5, 0.28), (0.5, 0.72))),
    3: (((0.27, 0.3), (0.73, 0.3), (0.5, 0.73)), ((0.3, 0.27), (0.3, 0.73), (0.73, 0.5))),
}
_CELL = {1: 0.8, 2: 0.44, 3: 0.42}


def _flat_lay(layers: list[Layer], classes: list[str], size: int,
              rng: np.random.Generator) -> tuple[list[np.ndarray], bool]:
    """Laid flat side by side, each garment turned a little, photographed from slightly off vertical."""
    n = len(layers)
    options = _SLOTS[n]
    slots = list(options[int(rng.integers(len(options)))])
    order = rng.permutation(n)
    mirror = bool(rng.random() < 0.25)
    camera = _camera(size, float(np.clip(rng.normal(0, 5), -15, 15)), rng.uniform(-0.15, 0.15),
                     rng.uniform(-0.15, 0.15), mirror)
    out = []
    for k, layer in enumerate(layers):
        corners = _corners(layer)
        lo, hi = corners.min(axis=0), corners.max(axis=0)
        scale = _CELL[n] * size / float(max(hi - lo)) * rng.uniform(0.88, 1.05)
        slot = np.array(slots[order[k]]) * size + rng.normal(0, 0.015 * size, 2)
        centre = (lo + hi) / 2
        out.append(camera @ geo.compose(geo.translation(*slot), geo.rotation(float(rng.normal(0, 8))),
                                        geo.scaling(scale), geo.translation(-centre[0], -centre[1])))
    return out, mirror
