"""Print patterns (texture attributes) and fabric surfaces (fabric attributes) as whole-canvas numpy fields.

Sizes come in garment units and are turned into pixels with the garment's ``unit`` (canvas pixels per unit), so
a pattern keeps its size relative to the garment in every photo of the item. Everything is vectorised; the
only drawing loops (flowers, spots) issue a few hundred PIL calls at most.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw

from shared.data.synth.catalog import ItemSpec

Color = tuple[float, float, float]


@lru_cache(maxsize=8)
def grid(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Pixel-centre coordinates (x, y) of a size x size canvas, float32. Read-only: shared between calls."""
    axis = np.arange(size, dtype=np.float32) + 0.5
    x, y = np.meshgrid(axis, axis)
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def smooth_noise(rng: np.random.Generator, size: int, cells: int, cells_y: int | None = None) -> np.ndarray:
    """Value noise in about [0, 1]: a coarse random grid upsampled bicubically to size x size."""
    coarse = rng.random(((cells_y or cells) + 1, cells + 1)).astype(np.float32)
    return np.clip(np.asarray(Image.fromarray(coarse, "F").resize((size, size), Image.BICUBIC)), 0.0, 1.0)


def band(t: np.ndarray, duty: float, aa: float) -> np.ndarray:
    """Anti-aliased periodic stripe: 1 where frac(t) < duty, with ``aa`` (in periods) of soft edge."""
    f = t - np.floor(t)
    inside = np.minimum(f, duty - f)
    outside = -np.minimum(f - duty, 1.0 - f)
    signed = np.where(f < duty, inside, outside)
    return np.clip(signed / max(aa, 1e-3) + 0.5, 0.0, 1.0)


def _mix(a: np.ndarray | Color, b: np.ndarray | Color, m: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float32)
    b = np.asarray(b, dtype=np.float32)
    return a + (b - a) * m[..., None]


def _rotated(size: int, degrees: float) -> tuple[np.ndarray, np.ndarray]:
    x, y = grid(size)
    c, s = math.cos(math.radians(degrees)), math.sin(math.radians(degrees))
    return x * c + y * s, -x * s + y * c


def _c255(color: np.ndarray | Color) -> tuple[int, int, int]:
    r, g, b = (int(round(float(v) * 255)) for v in np.clip(color, 0, 1))
    return r, g, b


# ------------------------------------------------------------------------------------------------ textures


def texture_field(item: ItemSpec, size: int, unit: float, rng: np.random.Generator) -> np.ndarray:
    """(size, size, 3) float32 RGB in [0, 1] of the item's print over the whole canvas."""
    c1, c2, c3, _ = item.colors
    st = item.style
    period = max(st["period"] * unit, 4.0)
    fn = _TEXTURES[item.texture]
    return fn(size, unit, period, st, c1, c2, c3, rng).astype(np.float32)


def _solid(size, unit, period, st, c1, c2, c3, rng):
    return np.broadcast_to(np.asarray(c1, np.float32), (size, size, 3)).copy()


def _striped(size, unit, period, st, c1, c2, c3, rng):
    u, _ = _rotated(size, st["angle"])
    t = u / period + st["phase"]
    out = _mix(c1, c2, band(t, st["duty"], 1.0 / period))
    if st["third_stripe"]:
        out = _mix(out, c3, band(t - st["duty"] - 0.12, 0.1, 1.0 / period))
    return out


def _dotted(size, unit, period, st, c1, c2, c3, rng):
    spacing = max(st["dot_spacing"] * unit, 5.0)
    u, v = _rotated(size, st["lattice_angle"])
    row = np.floor(v / spacing)
    du = (u / spacing + 0.5 * (row % 2)) % 1.0 - 0.5
    dv = (v / spacing) % 1.0 - 0.5
    dist = np.sqrt(du * du + dv * dv) * spacing
    return _mix(c1, c2, np.clip(st["dot_radius"] * spacing - dist + 0.5, 0.0, 1.0))


def _checked(size, unit, period, st, c1, c2, c3, rng):
    u, v = _rotated(size, 45.0 if abs(st["angle"]) == 45.0 else 0.0)
    m = 0.5 * band(u / period, 0.5, 1.0 / period) + 0.5 * band(v / period, 0.5, 1.0 / period)
    return _mix(c1, c2, m)


def _plaid(size, unit, period, st, c1, c2, c3, rng):
    """Tartan: one random sett of coloured bands, woven in both directions, with a fine twill."""
    sett = np.zeros((256, 3), np.float32)
    palette = [np.asarray(c, np.float32) for c in (c1, c2, c3, np.asarray(c1) * 0.4)]
    edges = np.sort(rng.choice(np.arange(8, 248), int(st["plaid_bands"]) * 2, replace=False))
    sett[:] = palette[0]
    for i in range(0, len(edges), 2):
        sett[edges[i] : edges[i + 1]] = palette[1 + (i // 2) % 3]
    x, y = grid(size)
    big = period * 2.5
    ix = ((x / big) % 1.0 * 256).astype(np.int32)
    iy = ((y / big) % 1.0 * 256).astype(np.int32)
    twill = (1.0 + 0.06 * np.sin((x + y) * (2 * math.pi / 3.0)))[..., None]
    return (0.5 * sett[ix] + 0.5 * sett[iy]) * twill


def _floral(size, unit, period, st, c1, c2, c3, rng):
    img = Image.new("RGB", (size, size), _c255(c1))
    draw = ImageDraw.Draw(img)
    area = (size / unit) ** 2
    count = int(np.clip(st["flower_density"] * 45 * area, 8, 220))
    petals = int(st["petals"])
    leaf = _c255((0.25 + 0.2 * c1[0], 0.45 + 0.15 * c2[1], 0.2))
    for _ in range(count):
        cx, cy = rng.uniform(-5, size + 5, 2)
        r = st["flower_size"] * unit * rng.uniform(0.6, 1.4)
        rot = rng.uniform(0, 2 * math.pi)
        if rng.random() < 0.6:
            lx, ly = cx + r * 1.1 * math.cos(rot + 2), cy + r * 1.1 * math.sin(rot + 2)
            draw.ellipse((lx - r * 0.45, ly - r * 0.25, lx + r * 0.45, ly + r * 0.25), fill=leaf)
        petal = _c255(np.asarray(c2) * rng.uniform(0.85, 1.1))
        for k in range(petals):
            a = rot + 2 * math.pi * k / petals
            px, py = cx + 0.55 * r * math.cos(a), cy + 0.55 * r * math.sin(a)
            draw.ellipse((px - 0.45 * r, py - 0.45 * r, px + 0.45 * r, py + 0.45 * r), fill=petal)
        draw.ellipse((cx - 0.3 * r, cy - 0.3 * r, cx + 0.3 * r, cy + 0.3 * r), fill=_c255(c3))
    return np.asarray(img, np.float32) / 255.0


def _gradient(size, unit, period, st, c1, c2, c3, rng):
    u, _ = _rotated(size, st["angle"] + 90.0)
    lo, hi = float(u.min()), float(u.max())
    t = (u - lo) / (hi - lo)
    t = t * t * (3 - 2 * t)
    return _mix(c1, c2, t)


def _abstract(size, unit, period, st, c1, c2, c3, rng):
    cells = int(np.clip(size / (period * 2.5), 3, 24))
    n1, n2 = smooth_noise(rng, size, cells), smooth_noise(rng, size, cells + 2)
    out = _mix(c1, c2, np.clip((n1 - 0.6) * 12, 0, 1))
    out = _mix(out, c3, np.clip((n2 - 0.68) * 12, 0, 1))
    img = Image.fromarray((out * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(3, 8))):  # brush strokes
        pts = rng.uniform(0, size, (3, 2))
        t = np.linspace(0, 1, 12)[:, None]
        curve = (1 - t) ** 2 * pts[0] + 2 * (1 - t) * t * pts[1] + t**2 * pts[2]
        color = _c255(c3 if rng.random() < 0.5 else np.asarray(c2) * 0.6)
        draw.line([tuple(p) for p in curve], fill=color, width=max(2, int(period * 0.25)), joint="curve")
    return np.asarray(img, np.float32) / 255.0


def _animal(size, unit, period, st, c1, c2, c3, rng):
    base = 0.55 * np.asarray(c1) + 0.45 * np.array([0.85, 0.66, 0.38])
    dark = np.asarray(c2) * 0.25
    if st["zebra"]:
        u, v = _rotated(size, st["angle"] + 90)
        warp = (smooth_noise(rng, size, 5) - 0.5) * period * 2.0
        return _mix(
            np.array([0.93, 0.92, 0.88]) * (0.6 + 0.4 * base), dark, band((u + warp) / period, 0.45, 1.5 / period)
        )
    img = Image.new("RGB", (size, size), _c255(base))
    draw = ImageDraw.Draw(img)
    r0 = period * 0.35
    count = int(np.clip((size / max(r0, 2)) ** 2 * 0.25, 20, 400))
    inner = _c255(base * 0.7)
    for _ in range(count):
        cx, cy = rng.uniform(-5, size + 5, 2)
        rx, ry = r0 * rng.uniform(0.6, 1.3), r0 * rng.uniform(0.5, 1.1)
        box = (cx - rx, cy - ry, cx + rx, cy + ry)
        if rng.random() < 0.7:
            draw.ellipse(box, fill=inner, outline=_c255(dark), width=max(1, int(r0 * 0.35)))
        else:
            draw.ellipse((cx - rx * 0.5, cy - ry * 0.5, cx + rx * 0.5, cy + ry * 0.5), fill=_c255(dark))
    return np.asarray(img, np.float32) / 255.0


def _camouflage(size, unit, period, st, c1, c2, c3, rng):
    cells = int(np.clip(size / (period * 3), 3, 16))
    fields = np.stack([smooth_noise(rng, size, cells) for _ in range(4)])
    label = np.argmax(fields, axis=0)
    c1a = np.asarray(c1, np.float32)
    palette = np.stack([c1a, c1a * 0.6, np.asarray(c2, np.float32), 0.5 * c1a + np.array([0.2, 0.2, 0.12], np.float32)])
    return palette[label]


def _tie_dye(size, unit, period, st, c1, c2, c3, rng):
    x, y = grid(size)
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    r = np.hypot(x - cx, y - cy) / (period * 3)
    theta = np.arctan2(y - cy, x - cx)
    wobble = smooth_noise(rng, size, 6) * 2.5
    v = np.sin(theta * 3 + r * st["tie_twist"] + wobble)
    out = _mix(c1, c2, (v + 1) / 2)
    white = np.clip(1 - np.abs(v) * 5, 0, 1) * 0.6
    return _mix(out, (0.96, 0.95, 0.93), white) * 0.5 + _mix(out, c3, np.clip(r / 5, 0, 1) * 0.5) * 0.5


def _chevron(size, unit, period, st, c1, c2, c3, rng):
    x, y = grid(size)
    width = period * 2
    tri = np.abs((x / width) % 1.0 - 0.5) * width * st["chevron_amp"] * 2
    t = (y + tri) / period + st["phase"]
    out = _mix(c1, c2, band(t, 0.5, 1.0 / period))
    return _mix(out, c3, band(t + 0.25, 0.08, 1.0 / period))


def _geometric(size, unit, period, st, c1, c2, c3, rng):
    x, y = grid(size)
    p = period * 1.6
    u, v = (x + y) / p, (x - y) / p
    d = np.abs(u % 1.0 - 0.5) + np.abs(v % 1.0 - 0.5)
    out = _mix(c1, c2, np.clip((0.32 - d) * p + 0.5, 0, 1))
    return _mix(out, c3, np.clip((0.12 - d) * p + 0.5, 0, 1))


_TEXTURES = {
    "solid": _solid,
    "striped": _striped,
    "dotted": _dotted,
    "checked": _checked,
    "plaid": _plaid,
    "floral": _floral,
    "gradient": _gradient,
    "abstract print": _abstract,
    "animal print": _animal,
    "camouflage": _camouflage,
    "tie-dye": _tie_dye,
    "chevron": _chevron,
    "geometric print": _geometric,
}


# ------------------------------------------------------------------------------------------------- fabrics


@dataclass
class Surface:
    """How a fabric modulates the print: multiply, then add highlights; alpha scales the garment's opacity."""

    multiply: np.ndarray  # (H, W) or (H, W, 1)
    highlight: np.ndarray | float = 0.0
    alpha: np.ndarray | float = 1.0


def fabric_surface(item: ItemSpec, size: int, unit: float, rng: np.random.Generator) -> Surface:
    x, y = grid(size)
    k = item.style["fabric_scale"] * max(unit / 150.0, 0.6)  # weave scale, never under ~2 px periods
    grain = rng.standard_normal((size, size)).astype(np.float32)
    fabric = item.fabric
    if fabric == "denim":
        twill = 1.0 + 0.1 * np.sin((x + y) * (2 * math.pi / (3.2 * k)))
        slub = 1.0 + 0.05 * np.convolve(rng.standard_normal(size + 8), np.ones(9) / 3, "valid")[:size][None, :]
        wash = 0.85 + 0.35 * smooth_noise(rng, size, 4)
        return Surface(twill * slub * wash + 0.03 * grain, 0.04 * (twill - 1 > 0.05))
    if fabric == "knit":
        p = 4.0 * k
        ribs = 1.0 - 0.14 * (0.5 + 0.5 * np.cos(2 * math.pi * x / p))
        vee = 1.0 - 0.05 * np.cos(2 * math.pi * (y / (p * 0.8) + np.abs((x / p) % 1.0 - 0.5)))
        return Surface(ribs * vee + 0.015 * grain)
    if fabric == "leather":
        spec = np.clip((smooth_noise(rng, size, 5) - 0.55) * 3.0, 0, 1) ** 2
        return Surface(0.85 + 0.03 * grain, 0.45 * spec)
    if fabric == "chiffon":
        sheen = smooth_noise(rng, size, 4)
        return Surface(1.03 + 0.01 * grain, 0.08 * sheen, 0.6 + 0.15 * sheen)
    if fabric == "lace":  # a fine hexagonal net with solid floral motifs and a raised cord around them
        s = max(2.6 * k, 3.0)
        u, v = _rotated(size, 30.0)
        row = np.floor(v / s)
        du = (u / s + 0.5 * (row % 2)) % 1.0 - 0.5
        dv = (v / s) % 1.0 - 0.5
        hole = np.clip((0.32 - np.sqrt(du * du + dv * dv)) * s + 0.5, 0, 1)
        blobs = smooth_noise(rng, size, max(4, int(size / (unit * 0.06))))
        motif = np.clip((blobs - 0.52) * 14, 0, 1)
        cord = np.clip(1 - np.abs(blobs - 0.52) * 40, 0, 1)
        alpha = 1.0 - 0.8 * hole * (1 - motif)
        return Surface(1.0 + 0.12 * motif - 0.25 * cord + 0.01 * grain, 0.0, alpha)
    if fabric == "sequin":
        cell = max(int(round(3 * k)), 2)
        coarse = rng.random((size // cell + 1, size // cell + 1)).astype(np.float32)
        cells = np.asarray(Image.fromarray(coarse, "F").resize((coarse.shape[1] * cell,) * 2, Image.NEAREST))
        cells = cells[:size, :size]
        return Surface(0.7 + 0.55 * cells, 0.9 * (cells > 0.96) + 0.1 * smooth_noise(rng, size, 4))
    if fabric == "satin":
        sheen = smooth_noise(rng, size, 3, 2)
        return Surface(0.82 + 0.3 * sheen + 0.01 * grain, 0.22 * np.clip(sheen - 0.6, 0, 1) * 2.5)
    if fabric == "corduroy":
        p = 6.5 * k
        wale = 0.8 + 0.2 * np.sin(math.pi * (x / p) % math.pi) ** 0.5
        return Surface(wale + 0.02 * grain)
    if fabric == "mesh":
        s = 4.0 * k
        hole = band(x / s, 0.45, 1.0 / s) * band(y / s, 0.45, 1.0 / s)
        return Surface(1.0 + 0.02 * grain, 0.0, 1.0 - 0.7 * hole)
    if fabric == "linen":
        rows = rng.standard_normal(size).astype(np.float32)[:, None]
        cols = rng.standard_normal(size).astype(np.float32)[None, :]
        return Surface(1.0 + 0.035 * (rows + cols) + 0.02 * grain)
    if fabric == "velvet":
        pile = smooth_noise(rng, size, 5)
        return Surface(0.65 + 0.5 * pile**1.5 + 0.02 * grain, 0.06 * pile)
    return Surface(1.0 + 0.025 * grain)  # cotton
