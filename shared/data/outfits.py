"""Outfit photos in DeepFashion2's layout: several garments per image, each with box, category and landmarks.

Reads ``<split>/annos/*.json`` beside ``<split>/image/*.jpg`` (splits ``train``, ``validation``, ``test``), as
DeepFashion2 ships them and ``fashion synth --benchmark outfits`` writes them (the fields, and which of them are
DeepFashion2's own, are listed in shared/data/synth/outfit_pipeline.py). Landmarks come back in the 8 canonical
slots with this project's visibility codes; DeepFashion2's v = 0 ("not labelled") becomes VIS_TRUNCATED for a
slot the clothes type has and VIS_ABSENT otherwise. A malformed file is an InvalidInput naming the file and field.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import InvalidInput
from shared.vocabulary import (
    GARMENT_CLASS_TYPE,
    GARMENT_CLASSES,
    LANDMARK_SLOTS,
    NUM_LANDMARKS,
    VIS_ABSENT,
    VIS_OCCLUDED,
    VIS_TRUNCATED,
    VIS_VISIBLE,
    ClothesType,
)

SPLITS: tuple[str, ...] = ("train", "validation", "test")
SOURCES = {"user": "consumer", "shop": "shop"}


@dataclass
class Garment:
    """One annotated garment (DeepFashion2 "item") of an image."""

    box: tuple[float, float, float, float]  # x1, y1, x2, y2 in pixels
    category_id: int
    category_name: str
    clothes_type: ClothesType
    garment_class: str  # one of GARMENT_CLASSES
    style: int  # > 0: matched across domains by (pair_id, style)
    landmarks: np.ndarray  # (8, 2) float32 pixels
    visibility: np.ndarray  # (8,) int64 VIS_* codes
    item_id: str | None = None
    occlusion: int = 1


@dataclass
class OutfitImage:
    image: str  # relative to the benchmark root
    split: str
    domain: str  # consumer / shop
    pair_id: int
    garments: list[Garment] = field(default_factory=list)

    def match_key(self, garment: Garment) -> str | None:
        """The identity a consumer garment must find in the shop gallery: the item id, else (pair_id, style)."""
        if garment.item_id:
            return garment.item_id
        return f"{self.pair_id}/{garment.style}" if garment.style > 0 else None


@dataclass
class OutfitBenchmark:
    name: str
    root: Path
    images: list[OutfitImage]

    def split(self, *names: str) -> list[OutfitImage]:
        return [i for i in self.images if i.split in names]

    def path(self, image: OutfitImage) -> Path:
        path = self.root / image.image
        if not path.is_file():
            raise InvalidInput(f"expected the image {path} that {image.image!r}'s annotation describes, found none")
        return path

    def categories(self) -> dict[str, ClothesType]:
        return {g.category_name: g.clothes_type for i in self.images for g in i.garments}


def is_outfits(root: str | Path) -> bool:
    """Whether ``root`` holds DeepFashion2-style ``<split>/annos`` folders."""
    return any((Path(root) / s / "annos").is_dir() for s in SPLITS)


def load_outfits(root: str | Path) -> OutfitBenchmark:
    root = Path(root)
    present = [s for s in SPLITS if (root / s / "annos").is_dir()]
    if not present:
        raise InvalidInput(f"expected DeepFashion2-style folders {root}/<split>/annos/*.json with split one of "
                           f"{', '.join(SPLITS)}, found none")
    images = []
    for split in present:
        for path in sorted((root / split / "annos").glob("*.json")):
            images.append(_read_image(root, split, path))
    if not images:
        raise InvalidInput(f"expected annotation files under {root}/{{{','.join(present)}}}/annos, found none")
    return OutfitBenchmark("outfits", root, images)


def _read_image(root: Path, split: str, path: Path) -> OutfitImage:
    try:
        anno = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{path}: expected one JSON object per image, could not parse it ({exc})") from None
    if not isinstance(anno, dict):
        raise InvalidInput(f"{path}: expected a JSON object with source, pair_id and item1..itemN")
    source = anno.get("source")
    if source not in SOURCES:
        raise InvalidInput(f"{path}: expected source 'user' or 'shop', got {source!r}")
    pair_id = anno.get("pair_id")
    if not isinstance(pair_id, int) or isinstance(pair_id, bool):
        raise InvalidInput(f"{path}: expected an integer pair_id, got {pair_id!r}")
    keys = sorted((k for k in anno if k.startswith("item")), key=lambda k: (len(k), k))
    garments = [_read_item(path, k, anno[k]) for k in keys]
    image = f"{split}/image/{path.stem}.jpg"
    return OutfitImage(image, split, SOURCES[source], pair_id, garments)


def _number(path: Path, key: str, name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not np.isfinite(value):
        raise InvalidInput(f"{path}: {key}.{name}: expected a number, got {value!r}")
    return float(value)


def _read_item(path: Path, key: str, item: object) -> Garment:
    if not isinstance(item, dict):
        raise InvalidInput(f"{path}: {key}: expected an object with category_id, bounding_box and landmarks")
    for name in ("category_id", "category_name", "bounding_box", "landmarks"):
        if name not in item:
            raise InvalidInput(f"{path}: {key}: expected a {name!r} field")
    box = item["bounding_box"]
    if not isinstance(box, list) or len(box) != 4:
        raise InvalidInput(f"{path}: {key}.bounding_box: expected [x1, y1, x2, y2], got {box!r}")
    x1, y1, x2, y2 = (_number(path, key, "bounding_box", v) for v in box)
    if not (x2 > x1 and y2 > y1) or min(x1, y1) < 0:
        raise InvalidInput(f"{path}: {key}.bounding_box: expected 0 <= x1 < x2 and 0 <= y1 < y2, got {box!r}")
    category_id = item["category_id"]
    if not isinstance(category_id, int) or isinstance(category_id, bool) or category_id < 1:
        raise InvalidInput(f"{path}: {key}.category_id: expected an integer >= 1, got {category_id!r}")
    clothes_type, garment_class = _types(path, key, item)
    flat = item["landmarks"]
    if not isinstance(flat, list) or len(flat) != 3 * NUM_LANDMARKS:
        got = len(flat) if isinstance(flat, list) else flat
        raise InvalidInput(f"{path}: {key}.landmarks: expected {3 * NUM_LANDMARKS} numbers ([x, y, v] for each "
                           f"of the {NUM_LANDMARKS} FashionNet landmarks), got {got!r}")
    values = np.array([_number(path, key, "landmarks", v) for v in flat], np.float64).reshape(NUM_LANDMARKS, 3)
    landmarks = values[:, :2].astype(np.float32)
    visibility = np.full(NUM_LANDMARKS, VIS_ABSENT, np.int64)
    for slot in range(NUM_LANDMARKS):
        v = int(values[slot, 2])
        if v not in (0, 1, 2):
            raise InvalidInput(f"{path}: {key}.landmarks: expected visibility 0, 1 or 2, got {values[slot, 2]!r}")
        if v == 2:
            visibility[slot] = VIS_VISIBLE
        elif v == 1:
            visibility[slot] = VIS_OCCLUDED
        elif slot in LANDMARK_SLOTS[clothes_type]:
            visibility[slot] = VIS_TRUNCATED
    style = item.get("style", 0)
    item_id = item.get("item_id")
    return Garment((x1, y1, x2, y2), category_id, str(item["category_name"]), clothes_type, garment_class,
                   int(style) if isinstance(style, int) else 0, landmarks, visibility,
                   str(item_id) if item_id else None, int(item.get("occlusion", 1) or 1))


def _types(path: Path, key: str, item: dict) -> tuple[ClothesType, str]:
    """Clothes type and detector class; DeepFashion2's own files carry neither, so they must be present here."""
    garment_class = item.get("garment_class")
    raw_type = item.get("clothes_type")
    if garment_class is None and raw_type is not None:
        garment_class = {1: "upper", 2: "lower", 3: "full"}.get(raw_type)
    if garment_class not in GARMENT_CLASSES:
        raise InvalidInput(f"{path}: {key}.garment_class: expected one of {', '.join(GARMENT_CLASSES)} "
                           f"(or clothes_type 1, 2 or 3), got {garment_class!r}")
    if raw_type is None:
        return GARMENT_CLASS_TYPE[garment_class], garment_class
    try:
        return ClothesType(raw_type), garment_class
    except ValueError:
        raise InvalidInput(f"{path}: {key}.clothes_type: expected 1, 2 or 3, got {raw_type!r}") from None
