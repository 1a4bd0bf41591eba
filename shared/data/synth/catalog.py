"""Vocabularies of the synthetic catalogue and the sampling of one item (category, palette, attributes, params).

Every random draw goes through :func:`rng_for`, keyed by (seed, benchmark, stream, item, photo), so an item looks
the same whichever worker renders it and whatever order the items are rendered in.
"""

from __future__ import annotations

import colorsys
from dataclasses import dataclass, field

import numpy as np

from shared.vocabulary import ATTRIBUTE_GROUPS, ClothesType

BENCHMARKS: tuple[str, ...] = ("inshop", "consumer2shop", "attributes", "landmarks", "outfits")

# Independent random streams, so adding draws to one never shifts another.
STREAM_ITEM = 0
STREAM_TEXTURE = 1
STREAM_PLAN = 2
STREAM_PHOTO = 3
STREAM_SPLIT = 4

UPPER, LOWER, FULL = ClothesType.UPPER, ClothesType.LOWER, ClothesType.FULL


def rng_for(seed: int, benchmark: str, stream: int, item: int = 0, photo: int = 0) -> np.random.Generator:
    """The one way to get randomness here: a generator determined by its key alone, never by global state."""
    return np.random.default_rng([seed, BENCHMARKS.index(benchmark), stream, item, photo])


@dataclass(frozen=True)
class CategorySpec:
    name: str
    clothes_type: ClothesType
    kind: str  # silhouette family: top / skirt / trousers / dress / jumpsuit
    inshop: tuple[tuple[str, str], ...]  # (gender, folder) choices of the in-shop image tree
    c2s: tuple[str, str]  # (group, folder) of the consumer-to-shop image tree


CATEGORIES: tuple[CategorySpec, ...] = (
    CategorySpec("Tee", UPPER, "top", (("WOMEN", "Tees_Tanks"), ("MEN", "Tees_Tanks")), ("TOPS", "T_Shirt")),
    CategorySpec("Tank", UPPER, "top", (("WOMEN", "Tees_Tanks"), ("MEN", "Tees_Tanks")), ("TOPS", "Summer_Wear")),
    CategorySpec(
        "Blouse", UPPER, "top", (("WOMEN", "Blouses_Shirts"), ("MEN", "Shirts_Polos")), ("CLOTHING", "Blouse")
    ),
    CategorySpec("Sweater", UPPER, "top", (("WOMEN", "Sweaters"), ("MEN", "Sweaters")), ("CLOTHING", "Knitwear")),
    CategorySpec("Cardigan", UPPER, "top", (("WOMEN", "Cardigans"),), ("CLOTHING", "Cardigan")),
    CategorySpec("Jacket", UPPER, "top", (("WOMEN", "Jackets_Coats"), ("MEN", "Jackets_Vests")), ("CLOTHING", "Coat")),
    CategorySpec(
        "Hoodie",
        UPPER,
        "top",
        (("WOMEN", "Sweatshirts_Hoodies"), ("MEN", "Sweatshirts_Hoodies")),
        ("CLOTHING", "Hoodie"),
    ),
    CategorySpec("Shorts", LOWER, "trousers", (("WOMEN", "Shorts"), ("MEN", "Shorts")), ("TROUSERS", "Shorts")),
    CategorySpec("Skirt", LOWER, "skirt", (("WOMEN", "Skirts"),), ("DRESSES", "Skirt")),
    CategorySpec("Jeans", LOWER, "trousers", (("WOMEN", "Denim"), ("MEN", "Denim")), ("TROUSERS", "Jeans")),
    CategorySpec("Trousers", LOWER, "trousers", (("WOMEN", "Pants"), ("MEN", "Pants")), ("TROUSERS", "Pants")),
    CategorySpec("Leggings", LOWER, "trousers", (("WOMEN", "Leggings"),), ("TROUSERS", "Leggings")),
    CategorySpec("Dress", FULL, "dress", (("WOMEN", "Dresses"),), ("DRESSES", "Dress")),
    CategorySpec("Jumpsuit", FULL, "jumpsuit", (("WOMEN", "Rompers_Jumpsuits"),), ("DRESSES", "Jumpsuit")),
    CategorySpec("Romper", FULL, "jumpsuit", (("WOMEN", "Rompers_Jumpsuits"),), ("DRESSES", "Romper")),
)
CATEGORY_INDEX = {c.name: i for i, c in enumerate(CATEGORIES)}

# name -> group; the order here is the order of list_attr_cloth.txt.
_ATTRIBUTES_BY_GROUP: dict[str, tuple[str, ...]] = {
    "texture": (
        "solid", "striped", "dotted", "checked", "plaid", "floral", "gradient", "abstract print", "animal print",
        "camouflage", "tie-dye", "chevron", "geometric print",
    ),
    "fabric": (
        "cotton", "denim", "knit", "leather", "chiffon", "lace", "sequin", "satin", "corduroy", "mesh", "linen",
        "velvet",
    ),
    "shape": (
        "sleeveless", "short sleeve", "long sleeve", "crew neck", "v-neck", "mini", "midi", "maxi", "fitted", "loose",
        "a-line", "cropped", "skinny", "wide-leg",
    ),
    "part": (
        "pocket", "buttons", "zipper", "belt", "hood", "collar", "bow", "ruffle hem", "drawstring", "pleats", "cuffs",
    ),
    "style": (
        "graphic text", "logo", "colorblock", "distressed", "embellished", "sporty stripes", "contrast trim",
        "embroidered",
    ),
}  # fmt: skip
ATTRIBUTES: tuple[tuple[str, str], ...] = tuple(
    (name, group) for group in ATTRIBUTE_GROUPS for name in _ATTRIBUTES_BY_GROUP[group]
)
ATTRIBUTE_INDEX = {name: i for i, (name, _) in enumerate(ATTRIBUTES)}

_ALL = frozenset(c.name for c in CATEGORIES)
_TOPS = frozenset(c.name for c in CATEGORIES if c.kind == "top")
_BOTTOMS = frozenset(c.name for c in CATEGORIES if c.clothes_type == LOWER)
_FULLS = frozenset(c.name for c in CATEGORIES if c.clothes_type == FULL)
_SLEEVED = _TOPS | _FULLS
_LEGGED = frozenset({"Shorts", "Jeans", "Trousers", "Leggings", "Jumpsuit", "Romper"})

# Parts and styles: which categories may carry each, and how likely it is there.
_OPTIONAL: dict[str, tuple[frozenset[str], float]] = {
    "pocket": (frozenset({"Blouse", "Jacket", "Cardigan", "Hoodie", "Shorts", "Jeans", "Trousers", "Skirt",
                          "Jumpsuit", "Romper", "Dress"}), 0.35),
    "buttons": (frozenset({"Blouse", "Cardigan", "Jacket", "Dress", "Jumpsuit", "Romper", "Skirt"}), 0.35),
    "zipper": (frozenset({"Jacket", "Hoodie", "Skirt", "Dress", "Jumpsuit", "Sweater"}), 0.25),
    "belt": (frozenset({"Skirt", "Trousers", "Jeans", "Shorts", "Dress", "Jumpsuit", "Romper"}), 0.3),
    "hood": (frozenset({"Jacket"}), 0.3),
    "collar": (frozenset({"Blouse", "Jacket", "Dress", "Jumpsuit", "Romper", "Tee"}), 0.3),
    "bow": (frozenset({"Blouse", "Dress", "Skirt", "Romper", "Tank"}), 0.2),
    "ruffle hem": (frozenset({"Blouse", "Skirt", "Dress", "Tank"}), 0.25),
    "drawstring": (frozenset({"Hoodie", "Shorts", "Trousers", "Jumpsuit"}), 0.35),
    "pleats": (frozenset({"Skirt", "Dress", "Trousers"}), 0.3),
    "cuffs": (frozenset({"Sweater", "Hoodie", "Jacket", "Cardigan", "Blouse", "Jeans", "Trousers"}), 0.3),
    "graphic text": (frozenset({"Tee", "Tank", "Hoodie", "Sweater"}), 0.3),
    "logo": (frozenset({"Tee", "Tank", "Hoodie", "Sweater", "Jacket", "Shorts", "Trousers", "Leggings"}), 0.25),
    "colorblock": (_ALL, 0.12),
    "distressed": (frozenset({"Jeans", "Shorts", "Tee", "Jacket", "Skirt"}), 0.25),
    "embellished": (frozenset({"Blouse", "Dress", "Sweater", "Tank", "Skirt", "Jacket", "Cardigan"}), 0.2),
    "sporty stripes": (frozenset({"Tee", "Hoodie", "Jacket", "Sweater", "Shorts", "Trousers", "Leggings",
                                  "Jumpsuit"}), 0.2),
    "contrast trim": (_ALL, 0.15),
    "embroidered": (frozenset({"Blouse", "Dress", "Jeans", "Jacket", "Tee", "Skirt"}), 0.15),
}  # fmt: skip
_EXCLUSIVE = (("buttons", "zipper"), ("hood", "collar"), ("graphic text", "logo"))

_FABRICS: dict[str, tuple[tuple[str, float], ...]] = {
    "Tee": (("cotton", 5), ("knit", 2), ("mesh", 1), ("linen", 1)),
    "Tank": (("cotton", 4), ("knit", 2), ("mesh", 1), ("satin", 1), ("lace", 1), ("sequin", 1)),
    "Blouse": (("chiffon", 3), ("cotton", 3), ("satin", 2), ("lace", 1), ("linen", 2), ("velvet", 1)),
    "Sweater": (("knit", 6), ("cotton", 1), ("velvet", 1)),
    "Cardigan": (("knit", 5), ("cotton", 1), ("lace", 1)),
    "Jacket": (("denim", 3), ("leather", 3), ("corduroy", 2), ("cotton", 2), ("velvet", 1), ("linen", 1)),
    "Hoodie": (("cotton", 4), ("knit", 2), ("velvet", 1)),
    "Shorts": (("denim", 4), ("cotton", 3), ("linen", 2), ("leather", 1), ("corduroy", 1)),
    "Skirt": (("denim", 2), ("leather", 2), ("chiffon", 2), ("lace", 1), ("sequin", 1), ("satin", 1), ("corduroy", 1),
              ("cotton", 2), ("velvet", 1), ("knit", 1)),
    "Jeans": (("denim", 1),),
    "Trousers": (("cotton", 3), ("linen", 2), ("corduroy", 2), ("leather", 1), ("velvet", 1), ("satin", 1),
                 ("knit", 1)),
    "Leggings": (("knit", 3), ("mesh", 1), ("leather", 1), ("cotton", 2)),
    "Dress": (("chiffon", 3), ("cotton", 3), ("lace", 2), ("satin", 2), ("sequin", 1), ("velvet", 1), ("knit", 1),
              ("linen", 1)),
    "Jumpsuit": (("cotton", 3), ("denim", 2), ("linen", 2), ("satin", 1), ("chiffon", 1)),
    "Romper": (("cotton", 3), ("denim", 1), ("linen", 2), ("chiffon", 2), ("lace", 1)),
}  # fmt: skip

# Fabrics that do not carry printed textures (a sequin or leather dress is plain or, rarely, gradient/animal).
_PLAIN_FABRICS = frozenset({"denim", "leather", "sequin", "lace", "velvet", "mesh", "corduroy"})
_TEXTURES = (
    ("solid", 8), ("striped", 3), ("dotted", 2), ("checked", 2), ("plaid", 2), ("floral", 2), ("gradient", 1.5),
    ("abstract print", 1.5), ("animal print", 1), ("camouflage", 1), ("tie-dye", 1), ("chevron", 1),
    ("geometric print", 1),
)  # fmt: skip
# Popular garment colours as HSV: black, white, grey, navy, beige, red, olive, burgundy, pink, sky, mustard, green.
_POPULAR = np.array([
    (0.0, 0.0, 0.12), (0.0, 0.0, 0.95), (0.0, 0.0, 0.55), (0.62, 0.7, 0.3), (0.1, 0.25, 0.85), (0.0, 0.8, 0.75),
    (0.2, 0.5, 0.45), (0.97, 0.7, 0.4), (0.95, 0.35, 0.95), (0.56, 0.4, 0.9), (0.12, 0.75, 0.85), (0.38, 0.6, 0.5),
])  # fmt: skip
_TEXT_WORDS = (
    "LOVE", "NYC", "WILD", "BROOKLYN", "SUMMER", "DREAM", "TOKYO", "PARIS", "GOOD VIBES", "ROCK", "ATHLETIC", "1987",
    "CALI", "SURF", "HELLO", "NO.9", "BERLIN", "STAY", "FREE", "LA", "VINTAGE", "CLUB",
)  # fmt: skip


@dataclass(frozen=True)
class ItemSpec:
    """Everything that defines one garment; every photo of the item is rendered from this alone."""

    index: int
    category: int  # index into CATEGORIES
    attributes: frozenset[str]
    texture: str
    fabric: str
    colors: tuple[tuple[float, float, float], ...]  # RGB in [0, 1]: base, secondary, accent, trim
    shape: dict[str, float] = field(hash=False)
    style: dict[str, float] = field(hash=False)
    text: str = ""
    gender: str = "WOMEN"
    folder: str = ""

    @property
    def spec(self) -> CategorySpec:
        return CATEGORIES[self.category]

    def has(self, attribute: str) -> bool:
        return attribute in self.attributes

    def labels(self) -> list[int]:
        """DeepFashion's per-attribute column: 1 positive, -1 negative, in list_attr_cloth.txt order."""
        return [1 if name in self.attributes else -1 for name, _ in ATTRIBUTES]

    def title(self) -> str:
        """A product title like the Category-and-Attribute folders (``Striped_Knit_Sweater``)."""
        words = [self.texture if self.texture != "solid" else "", self.fabric if self.fabric != "cotton" else ""]
        for name in ("maxi", "midi", "mini", "cropped", "v-neck", "hood", "ruffle hem", "graphic text", "distressed"):
            if name in self.attributes:
                words.append(name)
                break
        words.append(self.spec.name)
        return "_".join(w.replace(" ", "_").title() for w in words if w)


def _weighted(rng: np.random.Generator, options: tuple[tuple[str, float], ...]) -> str:
    weights = np.array([w for _, w in options], dtype=np.float64)
    return options[int(rng.choice(len(options), p=weights / weights.sum()))][0]


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    return colorsys.hsv_to_rgb(h % 1.0, float(np.clip(s, 0, 1)), float(np.clip(v, 0, 1)))


def _palette(rng: np.random.Generator, fabric: str) -> tuple[tuple[float, float, float], ...]:
    """Base colour from a continuous HSV draw; secondary/accent by a colour-harmony rule with jitter."""
    if fabric == "denim":
        h, s, v = rng.uniform(0.56, 0.64), rng.uniform(0.25, 0.7), rng.choice([rng.uniform(0.25, 0.85), 0.18])
    elif fabric == "leather":
        h, s, v = rng.choice([rng.uniform(0.02, 0.1), rng.uniform(0, 1)]), rng.uniform(0.0, 0.6), rng.uniform(0.1, 0.5)
    elif rng.random() < 0.5:  # a popular colour, so that many items share colour and differ only in detail
        h, s, v = _POPULAR[int(rng.integers(len(_POPULAR)))] + rng.normal(0, [0.01, 0.04, 0.04])
    else:
        h, s, v = rng.uniform(0, 1), rng.uniform(0.25, 0.95), rng.uniform(0.3, 0.95)
    harmony = rng.integers(4)
    dh = (0.5, 1 / 3, 1 / 12, 0.0)[harmony] + rng.normal(0, 0.03)
    s2 = s * rng.uniform(0.3, 1.2) if harmony < 3 else rng.uniform(0, 0.2)
    v2 = 1.0 - v * rng.uniform(0.6, 1.0) if harmony == 3 else v + rng.uniform(-0.45, 0.45)
    if abs(v2 - v) < 0.25 and harmony >= 2:
        v2 = v + (0.35 if v < 0.55 else -0.35)
    base = _hsv(h, s, v)
    second = _hsv(h + dh, s2, v2)
    accent = _hsv(h + rng.uniform(0.25, 0.75), rng.uniform(0.5, 1.0), rng.uniform(0.5, 1.0))
    trim = _hsv(rng.uniform(0, 1), rng.uniform(0, 0.3), rng.choice([0.95, 0.1, rng.uniform(0.3, 0.9)]))
    return base, second, accent, trim


def _shape(rng: np.random.Generator, cat: CategorySpec, attrs: set[str]) -> dict[str, float]:
    """Continuous silhouette parameters, drawn inside the ranges the discrete shape attributes imply."""
    name = cat.name
    u = rng.uniform
    p: dict[str, float] = {}
    fit = attrs & {"fitted", "loose"}
    fit_scale = 0.88 if "fitted" in fit else 1.18 if "loose" in fit else 1.0
    if cat.kind in ("top", "dress", "jumpsuit"):
        p["shoulder"] = u(0.185, 0.235) * (1.05 if name in ("Jacket", "Hoodie") else 1.0)
        p["shoulder_drop"] = u(0.02, 0.055)
        p["neck_w"] = u(0.055, 0.085)
        p["neck_d"] = u(0.12, 0.21) if "v-neck" in attrs else u(0.03, 0.07)
        p["armhole"] = u(0.15, 0.2)
        p["hem_w"] = p["shoulder"] * u(0.9, 1.02) * fit_scale
        p["waist_w"] = p["shoulder"] * (u(0.72, 0.82) if "fitted" in fit else u(0.86, 0.98)) * fit_scale
        p["hem_curve"] = u(-0.015, 0.035)
        if "cropped" in attrs:
            p["length"] = u(0.34, 0.44)
        elif name in ("Jacket", "Cardigan"):
            p["length"] = u(0.62, 0.86)
        else:
            p["length"] = u(0.56, 0.72)
        if "long sleeve" in attrs:
            p["sleeve_len"], p["cuff_w"], p["sleeve_angle"] = u(0.5, 0.66), u(0.04, 0.06), u(10, 38)
        elif "short sleeve" in attrs:
            p["sleeve_len"], p["cuff_w"], p["sleeve_angle"] = u(0.1, 0.2), u(0.06, 0.085), u(22, 55)
        else:
            p["sleeve_len"], p["cuff_w"], p["sleeve_angle"] = 0.0, 0.0, 0.0
            p["strap"] = u(0.03, 0.08)
            p["neck_w"] = u(0.06, 0.1)
        p["waist_y"] = u(0.36, 0.44)
    if cat.kind in ("skirt", "dress"):
        p["waist"] = u(0.13, 0.16)
        p["hip"] = p["waist"] * u(1.1, 1.22)
        if "a-line" in attrs:
            p["flare"] = u(1.45, 2.1)
        elif "fitted" in fit:
            p["flare"] = u(0.9, 1.08)
        else:
            p["flare"] = u(1.1, 1.4)
        p["skirt_len"] = u(0.9, 1.08) if "maxi" in attrs else u(0.56, 0.78) if "midi" in attrs else u(0.3, 0.44)
        p["skirt_curve"] = u(0.0, 0.05)
    if cat.kind in ("trousers", "jumpsuit"):
        p["waist"] = u(0.13, 0.165)
        p["hip"] = p["waist"] * u(1.1, 1.2)
        p["rise"] = u(0.24, 0.32)
        if name in ("Shorts", "Romper"):
            p["leg_len"] = u(0.3, 0.44) if name == "Shorts" else u(0.26, 0.36)
            p["leg_w"] = u(0.07, 0.1) * fit_scale
        else:
            p["leg_len"] = u(0.95, 1.06)
            p["leg_w"] = (
                u(0.036, 0.048) if "skinny" in attrs else u(0.095, 0.13) if "wide-leg" in attrs else u(0.055, 0.08)
            )
        p["leg_spread"] = u(0.0, 0.04)
        p["knee_in"] = u(-0.01, 0.02)
    # Part placement and sizes (used only if the part is present).
    p["pocket_size"], p["pocket_y"], p["button_n"], p["button_r"] = (
        u(0.06, 0.1),
        u(0.0, 1.0),
        rng.integers(3, 8),
        u(0.009, 0.016),
    )
    p["belt_w"], p["buckle_x"], p["ruffle_depth"], p["ruffle_waves"] = (
        u(0.03, 0.05),
        u(-0.3, 0.3),
        u(0.04, 0.08),
        int(rng.integers(6, 14)),
    )
    p["pleats"], p["bow_size"], p["bow_at_waist"] = int(rng.integers(4, 11)), u(0.04, 0.07), float(rng.random() < 0.5)
    p["cuff_len"], p["collar_size"], p["logo_x"] = u(0.03, 0.06), u(0.05, 0.09), u(-1, 1)
    return p


def _style(rng: np.random.Generator, texture: str) -> dict[str, float]:
    """Continuous texture and decoration parameters, in garment units (1 unit ~ a shoulder-to-hip span)."""
    u = rng.uniform
    angle = float(rng.choice([0.0, 90.0, 45.0, -45.0], p=[0.45, 0.35, 0.1, 0.1])) + rng.normal(0, 4)
    return {
        "angle": angle,
        "period": u(0.035, 0.13),
        "duty": u(0.2, 0.6),
        "third_stripe": float(rng.random() < 0.3),
        "dot_spacing": u(0.04, 0.11),
        "dot_radius": u(0.15, 0.33),
        "lattice_angle": u(0, 45),
        "flower_density": u(0.5, 1.6),
        "flower_size": u(0.025, 0.06),
        "petals": float(rng.integers(4, 8)),
        "noise_cells": float(rng.integers(3, 8)),
        "phase": u(0, 1),
        "zebra": float(rng.random() < 0.35),
        "tie_twist": u(2, 9),
        "chevron_amp": u(0.3, 1.0),
        "plaid_bands": float(rng.integers(3, 6)),
        "fold_amp": u(0.04, 0.1),
        "fold_cells": float(rng.integers(3, 7)),
        "text_size": u(0.5, 0.9),
        "text_y": u(0.15, 0.4),
        "logo_shape": float(rng.integers(5)),
        "logo_size": u(0.035, 0.07),
        "block_mode": float(rng.integers(3)),
        "block_pos": u(0.35, 0.65),
        "rips": float(rng.integers(2, 6)),
        "stud_n": float(rng.integers(8, 24)),
        "stripe_n": float(rng.integers(1, 4)),
        "trim_w": u(0.01, 0.02),
        "fabric_scale": u(0.8, 1.3),
        "texture_seed": float(rng.integers(1 << 30)),
    }


def sample_item(seed: int, benchmark: str, index: int) -> ItemSpec:
    """Draw one catalogue item: category, fabric, texture, shape attributes, parts, styles and all parameters."""
    rng = rng_for(seed, benchmark, STREAM_ITEM, index)
    category = int(rng.integers(len(CATEGORIES)))
    cat = CATEGORIES[category]
    name = cat.name
    attrs: set[str] = set()
    fabric = _weighted(rng, _FABRICS[name])
    texture = "solid"
    if fabric not in _PLAIN_FABRICS:
        texture = _weighted(rng, _TEXTURES)
    elif fabric in ("leather", "velvet") and rng.random() < 0.2:
        texture = "animal print"
    elif fabric in ("denim", "sequin") and rng.random() < 0.2:
        texture = "gradient"
    attrs |= {fabric, texture}
    # Shape attributes: one sleeve class and neckline where the garment has them, lengths, fits.
    if name in _SLEEVED:
        if name == "Tank":
            sleeve = "sleeveless"
        elif name in ("Sweater", "Cardigan", "Jacket", "Hoodie"):
            sleeve = "long sleeve"
        elif name == "Tee":
            sleeve = "short sleeve" if rng.random() < 0.75 else "long sleeve"
        elif name in ("Jumpsuit", "Romper"):
            sleeve = _weighted(rng, (("sleeveless", 1), ("short sleeve", 1), ("long sleeve", 0.3)))
        else:
            sleeve = _weighted(rng, (("sleeveless", 1), ("short sleeve", 1), ("long sleeve", 1)))
        attrs.add(sleeve)
        attrs.add(
            "v-neck" if rng.random() < (0.5 if name in ("Cardigan", "Jacket", "Blouse") else 0.3) else "crew neck"
        )
    if name in ("Skirt", "Dress"):
        attrs.add(_weighted(rng, (("mini", 1), ("midi", 1), ("maxi", 0.7))))
        if rng.random() < 0.3:
            attrs.add("a-line")
    if name == "Leggings":
        attrs |= {"fitted", "skinny"}
    else:
        fit = _weighted(rng, (("fitted", 1), ("loose", 1), ("", 1.5)))
        if fit and not (fit == "fitted" and "a-line" in attrs):
            attrs.add(fit)
    if name in ("Tee", "Tank", "Blouse", "Sweater", "Hoodie") and rng.random() < 0.2:
        attrs.add("cropped")
    if name in ("Jeans", "Trousers", "Jumpsuit"):
        leg = _weighted(rng, (("skinny", 1), ("wide-leg", 1), ("", 1.5)))
        if leg and not (leg == "wide-leg" and "fitted" in attrs):
            attrs.add(leg)
    if name == "Hoodie":
        attrs.add("hood")
    if name == "Jeans":
        attrs.add("pocket")
    for part, (allowed, prob) in _OPTIONAL.items():
        if name in allowed and rng.random() < prob * 0.75:
            attrs.add(part)
    for a, b in _EXCLUSIVE:
        if a in attrs and b in attrs:
            attrs.discard(b if rng.random() < 0.5 else a)
    if "sleeveless" in attrs:
        attrs.discard("cuffs")
    if name in ("Jacket", "Cardigan") and "buttons" not in attrs and "zipper" not in attrs:
        attrs.add("buttons" if rng.random() < 0.6 else "zipper")
    gender, folder = cat.inshop[int(rng.integers(len(cat.inshop)))]
    colors = _palette(rng, fabric)
    shape = _shape(rng, cat, attrs)
    style = _style(rng, texture)
    text = _TEXT_WORDS[int(rng.integers(len(_TEXT_WORDS)))]
    if rng.random() < 0.4:
        text += f" {int(rng.integers(1, 100)):02d}"
    return ItemSpec(index, category, frozenset(attrs), texture, fabric, colors, shape, style, text, gender, folder)
