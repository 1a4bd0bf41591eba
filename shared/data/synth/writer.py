"""Annotation files in the published DeepFashion layouts: count line, column names, space-padded entries.

Names are left-justified to a common width as in the released files; coordinates are zero-padded to three digits
(``072 079 232 273``) like the released list_bbox.txt and list_landmarks.txt.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from shared.data.synth.catalog import ATTRIBUTES, CATEGORIES, ItemSpec
from shared.data.synth.photos import PhotoResult
from shared.vocabulary import ATTRIBUTE_GROUPS, LANDMARK_SLOTS, NUM_LANDMARKS, ClothesType

PARTITION = "Eval/list_eval_partition.txt"
CATEGORY_FILES = (
    "Anno/list_category_cloth.txt",
    "Anno/list_category_img.txt",
    "Anno/list_attr_cloth.txt",
    "Anno/list_attr_img.txt",
)
FILES: dict[str, tuple[str, ...]] = {
    "inshop": (
        PARTITION,
        "Anno/list_bbox_inshop.txt",
        "Anno/list_landmarks_inshop.txt",
        "Anno/list_item_inshop.txt",
        *CATEGORY_FILES,
    ),
    "consumer2shop": (
        PARTITION,
        "Anno/list_bbox_consumer2shop.txt",
        "Anno/list_landmarks_consumer2shop.txt",
        *CATEGORY_FILES,
    ),
    "attributes": (*CATEGORY_FILES, "Anno/list_bbox.txt", "Anno/list_landmarks.txt", PARTITION),
    "landmarks": ("Anno/list_landmarks.txt", "Anno/list_bbox.txt", PARTITION),
}

_NAME_WIDTH = 29  # category/attribute name column of list_category_cloth.txt / list_attr_cloth.txt
_LANDMARK_HEADER = "  ".join(
    f"landmark_visibility_{i}  landmark_location_x_{i}  landmark_location_y_{i}" for i in range(1, NUM_LANDMARKS + 1)
)


@dataclass
class Photo:
    """One written image and everything the files say about it."""

    name: str  # relative to the benchmark root
    item: ItemSpec
    domain: str  # shop / consumer
    result: PhotoResult
    split: str = ""


def item_id(index: int) -> str:
    return f"id_{index + 1:08d}"


def write_list(path: Path, header: str | None, rows: Sequence[str]) -> None:
    """Line 1 the number of entries, line 2 the column names (if any), then one entry per line."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [str(len(rows))] + ([header] if header is not None else []) + list(rows)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def _width(names: Iterable[str]) -> int:
    return max((len(n) for n in names), default=10) + 1


def _bbox(result: PhotoResult) -> str:
    return " ".join(f"{v:03d}" for v in result.bbox)


def _triples(result: PhotoResult, clothes_type: ClothesType, pad_to_eight: bool) -> str:
    slots = LANDMARK_SLOTS[clothes_type]
    parts = [f"{result.visibility[s]} {result.landmarks[s, 0]:03d} {result.landmarks[s, 1]:03d}" for s in slots]
    if pad_to_eight:
        parts += ["0 0 0"] * (NUM_LANDMARKS - len(slots))
    return "  ".join(parts)


def _landmark_rows(photos: Sequence[Photo], pad_to_eight: bool = False) -> list[str]:
    w = _width(p.name for p in photos)
    rows = []
    for p in photos:
        ct = p.item.spec.clothes_type
        rows.append(f"{p.name.ljust(w)}{int(ct)}  {p.result.variation}  {_triples(p.result, ct, pad_to_eight)}")
    return rows


def write_category_files(root: Path, photos: Sequence[Photo]) -> None:
    """The Category-and-Attribute files; written for every benchmark that has categories, so all heads can train."""
    write_list(
        root / "Anno/list_category_cloth.txt",
        "category_name  category_type",
        [f"{c.name.ljust(_NAME_WIDTH - 1)} {int(c.clothes_type)}" for c in CATEGORIES],
    )
    w = _width(p.name for p in photos)
    write_list(
        root / "Anno/list_category_img.txt",
        "image_name  category_label",
        [f"{p.name.ljust(w)}{p.item.category + 1}" for p in photos],
    )
    write_list(
        root / "Anno/list_attr_cloth.txt",
        "attribute_name  attribute_type",
        [f"{name.ljust(_NAME_WIDTH - 1)} {ATTRIBUTE_GROUPS.index(group) + 1}" for name, group in ATTRIBUTES],
    )
    write_list(
        root / "Anno/list_attr_img.txt",
        "image_name  attribute_labels",
        [f"{p.name.ljust(w)}" + " ".join(f"{v:2d}" for v in p.item.labels()) for p in photos],
    )


def write_inshop(root: Path, photos: Sequence[Photo], num_items: int) -> None:
    w = _width(p.name for p in photos)
    write_list(
        root / PARTITION,
        "image_name  item_id  evaluation_status",
        [f"{p.name.ljust(w)}{item_id(p.item.index)} {p.split}" for p in photos],
    )
    write_list(
        root / "Anno/list_bbox_inshop.txt",
        "image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2",
        [f"{p.name.ljust(w)}{int(p.item.spec.clothes_type)}  {p.result.pose}  {_bbox(p.result)}" for p in photos],
    )
    write_list(
        root / "Anno/list_landmarks_inshop.txt",
        f"image_name  clothes_type  variation_type  {_LANDMARK_HEADER}",
        _landmark_rows(photos),
    )
    write_list(root / "Anno/list_item_inshop.txt", None, [item_id(i) for i in range(num_items)])
    write_category_files(root, photos)


def write_consumer2shop(root: Path, photos: Sequence[Photo]) -> None:
    """One partition line per (consumer photo, shop photo) pair of an item."""
    by_item: dict[int, list[Photo]] = {}
    for p in photos:
        by_item.setdefault(p.item.index, []).append(p)
    pairs = []
    for index in sorted(by_item):
        group = by_item[index]
        for consumer in (p for p in group if p.domain == "consumer"):
            for shop in (p for p in group if p.domain == "shop"):
                pairs.append((consumer.name, shop.name, item_id(index), consumer.split))
    w1, w2 = _width(p[0] for p in pairs), _width(p[1] for p in pairs)
    write_list(
        root / PARTITION,
        "image_pair_name_1  image_pair_name_2  item_id  evaluation_status",
        [f"{c.ljust(w1)}{s.ljust(w2)}{i} {split}" for c, s, i, split in pairs],
    )
    w = _width(p.name for p in photos)
    source = {"shop": 1, "consumer": 2}
    write_list(
        root / "Anno/list_bbox_consumer2shop.txt",
        "image_name  clothes_type  source_type  x_1  y_1  x_2  y_2",
        [f"{p.name.ljust(w)}{int(p.item.spec.clothes_type)}  {source[p.domain]}  {_bbox(p.result)}" for p in photos],
    )
    write_list(
        root / "Anno/list_landmarks_consumer2shop.txt",
        f"image_name  clothes_type  variation_type  {_LANDMARK_HEADER}",
        _landmark_rows(photos),
    )
    write_category_files(root, photos)


def _write_plain(root: Path, photos: Sequence[Photo], pad_to_eight: bool) -> None:
    w = _width(p.name for p in photos)
    write_list(
        root / "Anno/list_bbox.txt",
        "image_name  x_1  y_1  x_2  y_2",
        [f"{p.name.ljust(w)}{_bbox(p.result)}" for p in photos],
    )
    write_list(
        root / "Anno/list_landmarks.txt",
        f"image_name  clothes_type  variation_type  {_LANDMARK_HEADER}",
        _landmark_rows(photos, pad_to_eight),
    )
    write_list(root / PARTITION, "image_name  evaluation_status", [f"{p.name.ljust(w)}{p.split}" for p in photos])


def write_attributes(root: Path, photos: Sequence[Photo]) -> None:
    write_category_files(root, photos)
    _write_plain(root, photos, pad_to_eight=False)


def write_landmarks(root: Path, photos: Sequence[Photo]) -> None:
    _write_plain(root, photos, pad_to_eight=True)
