"""The label vocabulary the data loaders and the model share: landmarks, visibility codes, clothes types,
category and attribute names.

It lives outside both packages, and imports neither torch nor numpy, because both sides need it: the loaders
(``shared.data``) label images with it and the model (``shared.fashionnet``) sizes its heads and checkpoints
by it. Kept in either package it made the other import it back (``shared.data.dataset`` uses the model's
preprocessing), an import circle between the two; and ``shared.fashionnet``'s ``__init__`` imports torch,
which the torch-free loaders and the synthetic-data generator must not pay for.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum

# The paper's eight landmarks, in the order the full-body annotation lists them.
LANDMARK_NAMES: tuple[str, ...] = (
    "left_collar",
    "right_collar",
    "left_sleeve",
    "right_sleeve",
    "left_waistline",
    "right_waistline",
    "left_hem",
    "right_hem",
)
NUM_LANDMARKS = len(LANDMARK_NAMES)

# DeepFashion visibility codes, plus one for "this clothes type has no such landmark".
VIS_VISIBLE = 0
VIS_OCCLUDED = 1
VIS_TRUNCATED = 2
VIS_ABSENT = 3
VISIBILITY_NAMES: tuple[str, ...] = ("visible", "occluded", "truncated")


class ClothesType(IntEnum):
    """DeepFashion's clothes_type / category_type column."""

    UPPER = 1
    LOWER = 2
    FULL = 3


# Which canonical slots each clothes type annotates, in the order its landmark columns appear in the files.
LANDMARK_SLOTS: dict[ClothesType, tuple[int, ...]] = {
    ClothesType.UPPER: (0, 1, 2, 3, 6, 7),  # collar, sleeve, hem
    ClothesType.LOWER: (4, 5, 6, 7),  # waistline, hem
    ClothesType.FULL: (0, 1, 2, 3, 4, 5, 6, 7),
}

# DeepFashion's attribute_type column: 1 texture, 2 fabric, 3 shape, 4 part, 5 style.
ATTRIBUTE_GROUPS: tuple[str, ...] = ("texture", "fabric", "shape", "part", "style")


@dataclass(frozen=True)
class Category:
    name: str
    clothes_type: ClothesType


@dataclass(frozen=True)
class Attribute:
    name: str
    group: str  # one of ATTRIBUTE_GROUPS

# What the garment detector tells apart: DeepFashion's three clothes types, with upper-body outerwear (jackets,
# cardigans) as its own class because it is worn over another upper-body garment, whose box centre it shares.
GARMENT_CLASSES: tuple[str, ...] = ("upper", "lower", "full", "outer")
GARMENT_CLASS_TYPE: dict[str, ClothesType] = {"upper": ClothesType.UPPER, "lower": ClothesType.LOWER,
                                              "full": ClothesType.FULL, "outer": ClothesType.UPPER}
