"""Render one garment view as an RGBA layer: masks, print, fabric, shading, then parts and style details.

The layer lives on the garment canvas; photos warp it. Details are drawn in canvas pixels from the garment's
anchors, so a pocket or a logo sits at the same place on the garment in every photo of the item.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from shared.data.synth.catalog import ItemSpec
from shared.data.synth.garments import Garment, build_garment
from shared.data.synth.textures import _c255, fabric_surface, grid, smooth_noise, texture_field

RGBA = tuple[int, int, int, int]

# Parts and styles that only show on the front of a garment.
_FRONT_ONLY = frozenset({"buttons", "zipper", "bow", "drawstring", "graphic text", "logo", "embroidered"})


@dataclass
class Layer:
    image: Image.Image  # RGBA, canvas x canvas
    garment: Garment
    mask: Image.Image  # L, the garment's opaque area (before fabric transparency)
    covered: np.ndarray  # (8,) bool: landmark hidden by another part of the same garment (sleeve over hem ...)


def _rgba(color, alpha: int = 255, factor: float = 1.0) -> RGBA:
    r, g, b = _c255(np.clip(np.asarray(color, dtype=np.float64) * factor, 0, 1))
    return r, g, b, alpha


def _pts(points: np.ndarray) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in points]


@lru_cache(maxsize=32)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    try:
        return ImageFont.load_default(size=size)
    except (TypeError, OSError):  # Pillow built without FreeType: bitmap font, fixed size
        return ImageFont.load_default()


def render_layers(item: ItemSpec, canvas: int, views: tuple[str, ...]) -> dict[str, Layer]:
    """Front and/or back layers of an item. The print is computed once so both views share it."""
    rng = np.random.default_rng(int(item.style["texture_seed"]))
    front = build_garment(item, canvas, back=False)
    field = texture_field(item, canvas, front.unit, rng)
    surface = fabric_surface(item, canvas, front.unit, rng)
    layers = {}
    for i, view in enumerate(("front", "back")):
        if view in views:
            garment = front if view == "front" else build_garment(item, canvas, back=True)
            shade_rng = np.random.default_rng([int(item.style["texture_seed"]), i])
            layers[view] = _render_view(item, garment, field, surface, canvas, view == "back", shade_rng)
    return layers


def _part_masks(garment: Garment, canvas: int) -> dict[str, np.ndarray]:
    masks = {}
    for role, poly in garment.parts:
        img = Image.new("L", (canvas, canvas), 0)
        ImageDraw.Draw(img).polygon(_pts(poly), fill=255)
        key = "sleeves" if role.startswith("sleeve") else role
        m = np.asarray(img, np.float32) / 255.0
        masks[key] = np.maximum(masks[key], m) if key in masks else m
    return masks


def _render_view(
    item: ItemSpec,
    garment: Garment,
    field: np.ndarray,
    surface,
    canvas: int,
    back: bool,
    rng: np.random.Generator,
) -> Layer:
    masks = _part_masks(garment, canvas)
    union = np.zeros((canvas, canvas), np.float32)
    for m in masks.values():
        union = np.maximum(union, m)
    mask_img = Image.fromarray((union * 255).astype(np.uint8), "L")
    field = _colorblock(item, garment, field, masks) if item.has("colorblock") else field

    # Shading: soft vertical folds, darker rims, a dark hood lining, ruffle flutes.
    st = item.style
    folds = 1.0 + st["fold_amp"] * (smooth_noise(rng, canvas, int(st["fold_cells"]), 2) - 0.5) * 2.0
    blur = np.asarray(mask_img.filter(ImageFilter.BoxBlur(max(1, int(garment.unit * 0.025)))), np.float32) / 255.0
    rim = 0.78 + 0.22 * np.clip(2.0 * blur - 1.0, 0.0, 1.0)
    shade = folds * rim
    body = np.maximum(masks.get("body", 0.0), masks.get("skirt", 0.0))
    body = np.maximum(body, masks.get("legs", 0.0))
    if "hood" in masks:
        shade = shade * (1.0 - 0.4 * masks["hood"] * (1.0 - body))
    if "hood_back" in masks:
        shade = shade * (1.0 - 0.14 * masks["hood_back"])
    if "ruffle" in masks:
        x, _ = grid(canvas)
        flutes = 0.5 + 0.5 * np.sin(2 * math.pi * x / max(garment.unit * 0.05, 3.0))
        shade = shade * (1.0 - 0.2 * masks["ruffle"] * flutes)
    rgb = field * (surface.multiply * shade)[..., None] + np.asarray(surface.highlight, np.float32)[..., None]
    alpha = union * surface.alpha
    layer = np.dstack([np.clip(rgb, 0, 1) * 255, np.clip(alpha, 0, 1) * 255]).astype(np.uint8)
    image = Image.fromarray(layer, "RGBA")

    inside = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))  # details clipped to the garment
    free = Image.new("RGBA", (canvas, canvas), (0, 0, 0, 0))  # details that may stick out (bow, belt, collar)
    _draw_details(item, garment, ImageDraw.Draw(inside), ImageDraw.Draw(free), back, rng)
    clip_alpha = np.asarray(inside.getchannel("A"), np.float32) * (union > 0.5)
    inside.putalpha(Image.fromarray(clip_alpha.astype(np.uint8), "L"))
    image = Image.alpha_composite(Image.alpha_composite(image, inside), free)
    return Layer(image, garment, mask_img, _covered(garment, masks, canvas))


def _covered(g: Garment, masks: dict[str, np.ndarray], canvas: int) -> np.ndarray:
    """Self-occlusion: sleeves are drawn over the body (hem, waistline), a back hood over the collar."""
    covered = np.zeros(len(g.landmarks), bool)
    for slots, key in (((4, 5, 6, 7), "sleeves"), ((0, 1), "hood_back")):
        if key not in masks:
            continue
        for slot in slots:
            x, y = g.landmarks[slot]
            if np.isfinite(x) and 0 <= x < canvas and 0 <= y < canvas:
                covered[slot] = masks[key][int(y), int(x)] > 0.5
    return covered


def _colorblock(item: ItemSpec, g: Garment, field: np.ndarray, masks: dict[str, np.ndarray]) -> np.ndarray:
    """Replace one region of the print with the secondary colour: sleeves, a top band or one side."""
    second = np.asarray(item.colors[1], np.float32) * 0.9 + 0.1 * np.asarray(item.colors[2], np.float32)
    mode = int(item.style["block_mode"])
    canvas = field.shape[0]
    x, y = grid(canvas)
    if mode == 0 and "sleeves" in masks:
        region = masks["sleeves"]
    elif mode == 2:
        region = (x < canvas / 2).astype(np.float32)
    else:
        ys = [poly[:, 1] for _, poly in g.parts]
        top, bottom = float(min(p.min() for p in ys)), float(max(p.max() for p in ys))
        region = (y < top + item.style["block_pos"] * (bottom - top)).astype(np.float32)
    return field + (second - field) * region[..., None]


# ------------------------------------------------------------------------------------------------- details


def _draw_details(
    item: ItemSpec, g: Garment, inside: ImageDraw.ImageDraw, free: ImageDraw.ImageDraw, back: bool, rng
) -> None:
    a = g.anchors
    u = g.unit
    base, _, accent, trim = item.colors
    kind = item.spec.kind
    p, st = item.shape, item.style
    has = item.has
    show = (lambda name: has(name) and name not in _FRONT_ONLY) if back else has
    dark = _rgba(base, 110, 0.45)

    # Seams: sleeve outlines and a waistband line make the silhouette read as clothing.
    for role, poly in g.parts:
        if role.startswith("sleeve"):
            inside.line(_pts(np.vstack([poly, poly[:1]])), fill=dark, width=max(1, int(u * 0.008)))
        if role == "hood_back":
            inside.polygon(_pts(poly), outline=dark, width=max(1, int(u * 0.01)))
    if "waist_l" in a:
        wl, wr = a["waist_l"], a["waist_r"]
        off = np.array([0.0, 0.035 * u])
        inside.line(_pts(np.stack([wl + off, wr + off])), fill=dark, width=max(1, int(u * 0.006)))

    if show("pleats"):
        _pleats(g, inside, item, rng)
    if show("pocket"):
        _pockets(item, g, inside, back)
    if show("cuffs"):
        _cuffs(g, inside, item)
    if show("sporty stripes"):
        _sport_stripes(g, inside, item)
    if show("distressed"):
        _rips(g, inside, item, rng)
    if show("contrast trim"):
        w = max(2, int(st["trim_w"] * u * 2))
        for _, poly in g.parts:
            inside.line(_pts(np.vstack([poly, poly[:1]])), fill=_rgba(trim), width=w)
    if show("zipper"):
        top = a.get("neck_bottom", a.get("waist_c"))
        bottom = a.get("waist_c", top) + np.array([0, 0.22 * u])
        if kind in ("top", "dress", "jumpsuit"):
            bottom = {"top": a["hem_c"], "dress": a["waist_c"], "jumpsuit": a.get("crotch", a["hem_c"])}[kind]
        _zipper(inside, top, bottom, u)
    if show("buttons"):
        top = a.get("neck_bottom", a.get("waist_c"))
        bottom = a["hem_c"] if kind in ("top", "skirt") else a["waist_c"]
        _buttons(inside, top, bottom, u, item)
    if show("embellished"):
        _studs(g, inside, item, rng, back)
    if show("embroidered"):
        _embroidery(g, inside, item, rng)
    if show("graphic text") and "chest_l" in a:
        _graphic_text(g, inside, item)
    if show("logo"):
        _logo(g, inside, item)
    if show("belt") and "waist_l" in a:
        _belt(g, free, item)
    if show("collar") and "neck_l" in a and kind != "skirt":
        _collar(g, free, item, back)
    if show("drawstring"):
        _drawstring(g, free, item)
    if show("bow"):
        at_waist = (p["bow_at_waist"] and kind != "top") or "neck_bottom" not in a
        at = a["waist_c"] if at_waist else a["neck_bottom"]
        _bow(free, at, p["bow_size"] * u, _rgba(accent))


def _pleats(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec, rng) -> None:
    a, u = g.anchors, g.unit
    n = int(item.shape["pleats"])
    line = _rgba(item.colors[0], 150, 0.55)
    light = _rgba(item.colors[0], 90, 1.4)
    if "leg_hem_l" in a and item.spec.kind != "skirt" and item.spec.kind != "dress":
        for side in "lr":
            top = np.array([a["leg_hem_" + side][0] * 0.9 + a["waist_c"][0] * 0.1, a["waist_c"][1] + 0.04 * u])
            draw.line(_pts(np.stack([top, a["leg_hem_" + side]])), fill=line, width=max(1, int(u * 0.006)))
        return
    wl, wr, hl, hr = a["waist_l"], a["waist_r"], a["hem_l"], a["hem_r"]
    hem_y = a["hem_c"][1]
    for i in range(1, n):
        t = i / n
        top = wl + (wr - wl) * t + np.array([0, 0.04 * u])
        bottom = np.array([hl[0] + (hr[0] - hl[0]) * t, hem_y])
        draw.line(_pts(np.stack([top, bottom])), fill=line, width=max(1, int(u * 0.007)))
        draw.line(_pts(np.stack([top, bottom]) + [2, 0]), fill=light, width=1)


def _pockets(item: ItemSpec, g: Garment, draw: ImageDraw.ImageDraw, back: bool) -> None:
    a, u, p = g.anchors, g.unit, item.shape
    name, kind = item.spec.name, item.spec.kind
    fill = _rgba(item.colors[0], 255, 0.88)
    stitch = _rgba(item.colors[3] if item.fabric != "denim" else (0.85, 0.6, 0.2), 200)
    s = p["pocket_size"] * u
    if back:
        if kind in ("trousers", "jumpsuit") or name == "Skirt":
            for side in "lr":
                c = a["hip_" + side] * 0.55 + a["waist_c"] * 0.45 + np.array([0, 0.12 * u])
                box = [
                    (c[0] - s * 0.55, c[1] - s * 0.5),
                    (c[0] + s * 0.55, c[1] - s * 0.5),
                    (c[0] + s * 0.5, c[1] + s * 0.5),
                    (c[0], c[1] + s * 0.75),
                    (c[0] - s * 0.5, c[1] + s * 0.5),
                ]
                draw.polygon(box, fill=fill, outline=stitch, width=max(1, int(u * 0.005)))
        return
    if kind == "top" and name == "Hoodie":
        c = a["hem_c"] - np.array([0, 0.2 * u])
        w, h = 0.16 * u, 0.13 * u
        draw.polygon(
            [
                (c[0] - w * 0.7, c[1] - h / 2),
                (c[0] + w * 0.7, c[1] - h / 2),
                (c[0] + w, c[1] + h / 2),
                (c[0] - w, c[1] + h / 2),
            ],
            fill=fill,
            outline=stitch,
            width=max(1, int(u * 0.006)),
        )
    elif kind == "top" and name in ("Jacket", "Cardigan"):
        for side in "lr":
            c = np.array([a["hem_" + side][0] * 0.55 + a["hem_c"][0] * 0.45, a["hem_c"][1] - 0.17 * u])
            draw.rectangle((c[0] - s * 0.6, c[1] - s * 0.5, c[0] + s * 0.6, c[1] + s * 0.5), fill=fill, outline=stitch)
            draw.line([(c[0] - s * 0.6, c[1] - s * 0.2), (c[0] + s * 0.6, c[1] - s * 0.2)], fill=stitch, width=1)
    elif kind == "top":
        c = a["chest_l"] + np.array([0, (p["pocket_y"] - 0.5) * 0.05 * u])
        draw.rectangle((c[0] - s * 0.45, c[1] - s * 0.5, c[0] + s * 0.45, c[1] + s * 0.5), fill=fill, outline=stitch)
    else:  # slanted hip pockets below a waist
        for side in "lr":
            w, h = a["waist_" + side], a["hip_" + side]
            start = a["waist_c"] + (w - a["waist_c"]) * 0.55 + np.array([0, 0.03 * u])
            end = h + (a["waist_c"] - h) * 0.04 + np.array([0, -0.02 * u])
            draw.line(_pts(np.stack([start, end])), fill=_rgba(item.colors[0], 230, 0.5), width=max(2, int(u * 0.01)))
            draw.line(_pts(np.stack([start, end]) + [3, 2]), fill=stitch, width=1)


def _cuffs(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec) -> None:
    a, u = g.anchors, g.unit
    color = _rgba(item.colors[0], 255, 0.8)
    depth = item.shape["cuff_len"] * u
    pairs = []
    if "cuff_out_l" in a:
        for side in "lr":
            o, i, top = a["cuff_out_" + side], a["cuff_in_" + side], a["sleeve_top_" + side]
            d = top - a["cuff_" + side]
            d = d / (np.linalg.norm(d) + 1e-6) * depth
            pairs.append((o, i, d))
    elif "leg_out_l" in a:
        for side in "lr":
            pairs.append((a["leg_out_" + side], a["leg_in_" + side], np.array([0.0, -depth])))
    for o, i, d in pairs:
        draw.polygon(_pts(np.stack([o, i, i + d, o + d])), fill=color)
        for t in np.linspace(0.15, 0.85, 5):  # ribbing
            q = o + (i - o) * t
            draw.line(_pts(np.stack([q, q + d])), fill=_rgba(item.colors[0], 200, 0.6), width=1)


def _sport_stripes(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec) -> None:
    a, u = g.anchors, g.unit
    color = _rgba(item.colors[3] if np.mean(item.colors[3]) > 0.5 or np.mean(item.colors[0]) > 0.5 else (1, 1, 1))
    n, w = int(item.style["stripe_n"]), max(2, int(u * 0.012))
    segments = []
    if "cuff_out_l" in a:
        for side in "lr":
            segments.append((a["sleeve_top_" + side] * 0.6 + a["shoulder_" + side] * 0.4, a["cuff_" + side]))
    elif "leg_out_l" in a:
        for side in "lr":
            hip, out = a["hip_" + side], a["leg_out_" + side]
            inward = np.sign(a["waist_c"][0] - hip[0]) * 0.03 * u
            segments.append((hip + [inward, 0], out + [inward, 0]))
    for start, end in segments:
        d = end - start
        normal = np.array([-d[1], d[0]]) / (np.linalg.norm(d) + 1e-6)
        for k in range(n):
            off = normal * (k - (n - 1) / 2) * w * 1.8
            draw.line(_pts(np.stack([start + off, end + off])), fill=color, width=w)


def _rips(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec, rng) -> None:
    a, u = g.anchors, g.unit
    centres = []
    for _ in range(int(item.style["rips"])):
        if "knee_l" in a:
            side = "lr"[int(rng.integers(2))]
            c = a["knee_" + side] + rng.normal(0, 0.05 * u, 2)
        else:
            top, bottom = a.get("neck_bottom", a.get("waist_c")), a["hem_c"]
            c = top + (bottom - top) * rng.uniform(0.4, 0.95) + np.array([rng.normal(0, 0.08 * u), 0])
        centres.append(c)
    hole = (40, 34, 30, 255)
    thread = (235, 232, 222, 255)
    for c in centres:
        w, h = rng.uniform(0.03, 0.06) * u, rng.uniform(0.01, 0.022) * u
        t = np.linspace(0, 2 * math.pi, 10, endpoint=False)
        jag = rng.uniform(0.7, 1.2, 10)
        draw.polygon(_pts(np.stack([c[0] + w * jag * np.cos(t), c[1] + h * jag * np.sin(t)], axis=1)), fill=hole)
        for k in range(int(rng.integers(2, 5))):
            y = c[1] - h + 2 * h * (k + 0.5) / 4
            draw.line([(c[0] - w * 1.1, y), (c[0] + w * 1.1, y + rng.normal(0, 1))], fill=thread, width=1)


def _zipper(draw: ImageDraw.ImageDraw, top: np.ndarray, bottom: np.ndarray, u: float) -> None:
    metal = (176, 178, 186, 255)
    w = max(2, int(u * 0.01))
    draw.line(_pts(np.stack([top, bottom])), fill=(60, 60, 64, 255), width=w + 2)
    length = float(np.linalg.norm(bottom - top))
    steps = max(2, int(length / 2.5))
    for k in range(steps):
        q = top + (bottom - top) * (k / steps)
        dx = w * (0.9 if k % 2 else -0.9)
        draw.line([(q[0], q[1]), (q[0] + dx, q[1])], fill=metal, width=1)
    draw.rectangle((top[0] - w, top[1] + 1, top[0] + w, top[1] + 2.5 * w + 2), fill=metal)


def _buttons(draw: ImageDraw.ImageDraw, top: np.ndarray, bottom: np.ndarray, u: float, item: ItemSpec) -> None:
    n = int(item.shape["button_n"])
    r = max(1.2, item.shape["button_r"] * u)
    color = item.colors[3] if abs(np.mean(item.colors[3]) - np.mean(item.colors[0])) > 0.25 else item.colors[2]
    draw.line(_pts(np.stack([top, bottom]) + [r * 1.6, 0]), fill=_rgba(item.colors[0], 160, 0.6), width=1)
    for k in range(n):
        q = top + (bottom - top) * ((k + 0.6) / (n + 0.4))
        draw.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=_rgba(color), outline=_rgba(color, 255, 0.5))
        if r > 2.5:
            draw.point((q[0] - r * 0.3, q[1] - r * 0.3), fill=(255, 255, 255, 200))


def _studs(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec, rng, back: bool) -> None:
    a, u = g.anchors, g.unit
    gold = rng.random() < 0.5
    metal = (222, 190, 90, 255) if gold else (215, 218, 225, 255)
    r = max(1.2, 0.009 * u)
    n = int(item.style["stud_n"]) // (2 if back else 1)
    if "neck_l" in a:  # along the neckline
        nl, nr, nb = a["neck_l"], a["neck_r"], a["neck_bottom"]
        t = np.linspace(0, 1, n)[:, None]
        pts = (1 - t) ** 2 * nl + 2 * (1 - t) * t * (2 * nb - (nl + nr) / 2) + t**2 * nr + [0, 0.03 * u]
    else:  # along the waistband
        t = np.linspace(0, 1, n)[:, None]
        pts = a["waist_l"] + (a["waist_r"] - a["waist_l"]) * t + [0, 0.06 * u]
    for q in pts:
        draw.ellipse((q[0] - r, q[1] - r, q[0] + r, q[1] + r), fill=metal)
        draw.point((q[0] - r * 0.3, q[1] - r * 0.3), fill=(255, 255, 255, 255))


def _embroidery(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec, rng) -> None:
    a, u = g.anchors, g.unit
    color = _rgba(item.colors[2])
    leaf = (70, 130, 60, 255)
    spots = [a["chest_l"], a["chest_r"]] if "chest_l" in a else [a["hip_l"] * 0.6 + a["waist_c"] * 0.4 + [0, 0.1 * u]]
    for c in spots:
        r = 0.03 * u
        for k in range(5):
            ang = 2 * math.pi * k / 5
            q = c + r * np.array([math.cos(ang), math.sin(ang)])
            draw.ellipse((q[0] - r * 0.45, q[1] - r * 0.45, q[0] + r * 0.45, q[1] + r * 0.45), outline=color, width=1)
        draw.line(_pts(np.stack([c + [0, r], c + [r * 0.3, r * 2.6]])), fill=leaf, width=1)
        draw.ellipse((c[0] - 1.5, c[1] - 1.5, c[0] + 1.5, c[1] + 1.5), fill=(240, 210, 80, 255))


def _graphic_text(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec) -> None:
    a, u = g.anchors, g.unit
    width = float(a["chest_r"][0] - a["chest_l"][0]) * 1.3
    size = max(7, int(u * 0.09 * item.style["text_size"]))
    font = _font(size)
    text = item.text
    while size > 7 and draw.textlength(text, font=font) > width:
        size -= 1
        font = _font(size)
    y = a["neck_bottom"][1] + item.style["text_y"] * 0.4 * u
    color = item.colors[2] if abs(np.mean(item.colors[2]) - np.mean(item.colors[0])) > 0.2 else item.colors[3]
    draw.text((float(a["neck_bottom"][0]), float(y)), text, fill=_rgba(color), font=font, anchor="mt")


def _logo(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec) -> None:
    a, u, st = g.anchors, g.unit, item.style
    where = item.shape["logo_x"]
    if "chest_l" in a:
        c = a["chest_l"] if where < -0.3 else a["chest_r"] if where > 0.3 else (a["chest_l"] + a["chest_r"]) / 2
    else:
        c = a["hip_l"] * 0.7 + a["waist_c"] * 0.3 + np.array([0, 0.12 * u])
    r = st["logo_size"] * u
    color = _rgba(item.colors[2] if np.mean(item.colors[2]) != np.mean(item.colors[0]) else item.colors[3])
    shape = int(st["logo_shape"])
    if shape == 0:
        draw.ellipse((c[0] - r, c[1] - r, c[0] + r, c[1] + r), outline=color, width=max(1, int(r * 0.3)))
    elif shape == 1:
        t = np.arange(10) * math.pi / 5 - math.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        draw.polygon(_pts(np.stack([c[0] + rad * np.cos(t), c[1] + rad * np.sin(t)], axis=1)), fill=color)
    elif shape == 2:
        draw.polygon([(c[0], c[1] - r), (c[0] + r, c[1] + r * 0.8), (c[0] - r, c[1] + r * 0.8)], fill=color)
    elif shape == 3:
        draw.arc(
            (c[0] - r * 1.4, c[1] - r * 1.2, c[0] + r * 1.4, c[1] + r * 0.6),
            20,
            160,
            fill=color,
            width=max(2, int(r * 0.4)),
        )
    else:
        draw.polygon([(c[0], c[1] - r), (c[0] + r * 0.8, c[1]), (c[0], c[1] + r), (c[0] - r * 0.8, c[1])], fill=color)
        draw.line([(c[0] - r * 0.4, c[1]), (c[0] + r * 0.4, c[1])], fill=_rgba(item.colors[0]), width=1)


def _belt(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec) -> None:
    a, u, p = g.anchors, g.unit, item.shape
    wl, wr = a["waist_l"] + [-0.006 * u, 0.0], a["waist_r"] + [0.006 * u, 0.0]
    h = p["belt_w"] * u
    leather = (0.35, 0.22, 0.12) if item.colors[0][0] > 0.3 else (0.08, 0.08, 0.08)
    color = item.colors[3] if item.style["phase"] < 0.4 else leather
    draw.polygon(_pts(np.stack([wl, wr, wr + [0, h], wl + [0, h]])), fill=_rgba(color))
    c = wl + (wr - wl) * (0.5 + 0.25 * p["buckle_x"]) + [0, h / 2]
    metal = (210, 180, 90, 255) if item.style["phase"] > 0.5 else (200, 202, 210, 255)
    draw.rectangle(
        (c[0] - h * 0.6, c[1] - h * 0.65, c[0] + h * 0.6, c[1] + h * 0.65), outline=metal, width=max(1, int(h * 0.25))
    )


def _collar(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec, back: bool) -> None:
    a, u = g.anchors, g.unit
    size = item.shape["collar_size"] * u
    color = _rgba(item.colors[3] if item.style["phase"] < 0.3 else item.colors[0], 255, 1.08)
    edge = _rgba(item.colors[0], 255, 0.55)
    nl, nr = a["neck_l"], a["neck_r"]
    if back:
        draw.line(
            _pts(np.stack([nl + [0, size * 0.2], nr + [0, size * 0.2]])), fill=color, width=max(2, int(size * 0.4))
        )
        return
    nb = a["neck_bottom"]
    for n, sign in ((nl, -1.0), (nr, 1.0)):
        width = abs(n[0] - nb[0])
        flap = [
            tuple(n + [0, -0.012 * u]),
            tuple(nb + [sign * 0.008 * u, -0.004 * u]),
            tuple(nb + [sign * width * 0.45, size]),
            tuple(n + [sign * size * 0.25, size * 0.55]),
        ]
        draw.polygon(flap, fill=color, outline=edge)


def _drawstring(g: Garment, draw: ImageDraw.ImageDraw, item: ItemSpec) -> None:
    a, u = g.anchors, g.unit
    at = a["neck_bottom"] if "neck_bottom" in a and item.spec.kind == "top" else a.get("waist_c", a["hem_c"])
    color = _rgba(item.colors[3])
    length = 0.2 * u if item.spec.kind == "top" else 0.12 * u
    for sign in (-1, 1):
        start = at + [sign * 0.03 * u, 0.01 * u]
        end = start + [sign * 0.01 * u, length]
        draw.line(_pts(np.stack([start, end])), fill=color, width=max(1, int(u * 0.008)))
        draw.rectangle((end[0] - 1.5, end[1], end[0] + 1.5, end[1] + 0.02 * u), fill=(190, 190, 195, 255))


def _bow(draw: ImageDraw.ImageDraw, at: np.ndarray, size: float, color: RGBA) -> None:
    x, y = float(at[0]), float(at[1]) + size * 0.3
    draw.polygon([(x, y), (x - size, y - size * 0.6), (x - size, y + size * 0.6)], fill=color)
    draw.polygon([(x, y), (x + size, y - size * 0.6), (x + size, y + size * 0.6)], fill=color)
    draw.line([(x - 1, y), (x - size * 0.4, y + size * 1.2)], fill=color, width=max(1, int(size * 0.2)))
    draw.line([(x + 1, y), (x + size * 0.4, y + size * 1.2)], fill=color, width=max(1, int(size * 0.2)))
    r = size * 0.25
    draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(int(c * 0.7) for c in color[:3]) + (255,))
