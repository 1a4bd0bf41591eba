"""Loaders for the four DeepFashion benchmarks, reading the released annotation files as they are.

The released files share one layout: line 1 is the number of data lines, line 2 the column names, then one
entry per line with columns padded by runs of spaces. They also carry quirks (CRLF endings, trailing spaces,
a final empty line, attribute names with spaces, the ``comsumer`` spelling of consumer-to-shop image names),
so every file goes through one reader, :func:`_read_list`, and every malformed line becomes a
:class:`~shared.errors.DataFormatError` naming the file, the 1-based line and what was expected there.

Each loader returns one :class:`~shared.data.records.ImageRecord` per image, in the order the partition
file first lists it. Landmarks always land in the eight canonical slots of ``LANDMARK_SLOTS`` so one tensor
shape serves all clothes types. Only the partition file is required for the retrieval benchmarks: a
consumer-to-shop folder holding just the item groupings (partition, item list, bounding boxes) loads too.

``load_benchmark`` also takes a plain folder of product photos, ``ROOT/PRODUCT_ID/*.jpg`` (benchmark name
``folder``, see :mod:`shared.data.folder`), returned as a consumer-to-shop benchmark.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from shared.data.folder import has_product_folders, load_folder
from shared.data.labels import apply_attribute_labels, apply_category_labels, read_attributes, read_categories
from shared.data.listfile import PARTITION, Row, lookup, read_list, require_file
from shared.data.records import Benchmark, ImageRecord, PairBenchmark
from shared.errors import DataFormatError, InvalidInput
from shared.vocabulary import (
    LANDMARK_SLOTS,
    NUM_LANDMARKS,
    VIS_ABSENT,
    Attribute,
    Category,
    ClothesType,
)

__all__ = [
    "BENCHMARKS",
    "PairBenchmark",
    "load_attributes",
    "load_benchmark",
    "load_consumer2shop",
    "load_folder",
    "load_inshop",
    "load_landmarks",
]

BENCHMARKS: tuple[str, ...] = ("inshop", "consumer2shop", "attributes", "landmarks", "folder")

ITEM_INSHOP = "Anno/list_item_inshop.txt"
BBOX_INSHOP = "Anno/list_bbox_inshop.txt"
LANDMARKS_INSHOP = "Anno/list_landmarks_inshop.txt"
ITEM_C2S = "Anno/list_item_consumer2shop.txt"
BBOX_C2S = "Anno/list_bbox_consumer2shop.txt"
LANDMARKS_C2S = "Anno/list_landmarks_consumer2shop.txt"
BBOX = "Anno/list_bbox.txt"
LANDMARKS = "Anno/list_landmarks.txt"
CATEGORY_CLOTH = "Anno/list_category_cloth.txt"
CATEGORY_IMG = "Anno/list_category_img.txt"
ATTR_CLOTH = "Anno/list_attr_cloth.txt"
ATTR_IMG = "Anno/list_attr_img.txt"

# Leading column names of each file's header line (landmark files go on with one triple per landmark).
_BBOX_COLUMNS = ("x_1", "y_1", "x_2", "y_2")
_LANDMARK_COLUMNS = ("image_name", "clothes_type", "variation_type")
_INSHOP_BBOX_COLUMNS = ("image_name", "clothes_type", "pose_type", *_BBOX_COLUMNS)
_C2S_BBOX_COLUMNS = ("image_name", "clothes_type", "source_type", *_BBOX_COLUMNS)
_PLAIN_BBOX_COLUMNS = ("image_name", *_BBOX_COLUMNS)

_RETRIEVAL_SPLITS = ("train", "query", "gallery")
_TRAIN_VAL_TEST = ("train", "val", "test")
_SOURCE_DOMAINS = {1: "shop", 2: "consumer"}

# Files whose presence identifies a benchmark, checked in this order: the in-shop and consumer-to-shop folders
# may also hold category/attribute files, and the attribute folder also holds list_landmarks.txt.
_SIGNATURES: dict[str, tuple[str, ...]] = {
    "inshop": (ITEM_INSHOP, BBOX_INSHOP, LANDMARKS_INSHOP),
    "consumer2shop": (ITEM_C2S, BBOX_C2S, LANDMARKS_C2S),
    "attributes": (CATEGORY_IMG, ATTR_IMG),
    "landmarks": (LANDMARKS,),
}

def _split(row: Row, allowed: tuple[str, ...]) -> str:
    status = row.tokens[-1]
    if status not in allowed:
        raise row.error(f"evaluation_status {'/'.join(allowed)}", status)
    return status


def _clothes_type(row: Row, index: int) -> ClothesType:
    return ClothesType(row.integer(index, "clothes_type 1 (upper), 2 (lower) or 3 (full body)", (1, 2, 3)))


# --------------------------------------------------------------------------------------------- partitions


def _check_item(row: Row, item_id: str, item_ids: tuple[str, set[str]] | None) -> None:
    """``item_ids`` is (the item list's relative path, its ids), or None when the folder has no item list."""
    if item_ids is not None and item_id not in item_ids[1]:
        raise row.error(f"an item_id listed in {item_ids[0]}", item_id)


def _read_partition(
    path: Path, columns: tuple[str, ...], splits: tuple[str, ...], item_ids: tuple[str, set[str]] | None = None
) -> dict[str, ImageRecord]:
    """Records keyed by image name for the one-image-per-line partitions (in-shop, attributes, landmarks).

    ``columns`` is either ``image_name evaluation_status`` or ``image_name item_id evaluation_status``.
    """
    records: dict[str, ImageRecord] = {}
    with_item = len(columns) == 3
    for row in read_list(path, columns):
        row.expect_columns(len(columns), " ".join(columns))
        image = row.tokens[0]
        if image in records:
            raise row.error("each image listed once", image)
        item_id = row.tokens[1] if with_item else None
        if item_id is not None:
            _check_item(row, item_id, item_ids)
        records[image] = ImageRecord(image=image, split=_split(row, splits), item_id=item_id)
    return records


def _read_pairs(
    path: Path, item_ids: tuple[str, set[str]] | None = None
) -> tuple[dict[str, ImageRecord], list[tuple[str, str, str, str]]]:
    """Consumer-to-shop pairs, plus one record per distinct image (first pair decides its split).

    Column 1 is the consumer image and column 2 the shop image, which gives each image its domain when the
    folder has no bounding-box file (whose source_type column overrides it).
    """
    columns = ("image_pair_name_1", "image_pair_name_2", "item_id", "evaluation_status")
    records: dict[str, ImageRecord] = {}
    pairs: list[tuple[str, str, str, str]] = []
    for row in read_list(path, columns):
        row.expect_columns(4, " ".join(columns))
        consumer, shop, item_id = row.tokens[:3]
        _check_item(row, item_id, item_ids)
        split = _split(row, _TRAIN_VAL_TEST)
        for image, domain in ((consumer, "consumer"), (shop, "shop")):
            record = records.setdefault(image, ImageRecord(image, split, item_id=item_id, domain=domain))
            if record.item_id != item_id:
                raise row.error(f"item_id {record.item_id} for {image}, as in its earlier pairs", item_id)
        pairs.append((consumer, shop, item_id, split))
    return records, pairs


def _read_item_ids(root: Path, relative: str) -> tuple[str, set[str]] | None:
    """The item list (count line, optional ``item_id`` header, one id per line), or None when absent."""
    path = root / relative
    if not path.is_file():
        return None
    item_ids: set[str] = set()
    for row in read_list(path, ("item_id",), header_optional=True):
        row.expect_columns(1, "item_id")
        item_ids.add(row.tokens[0])
    return relative, item_ids


# ---------------------------------------------------------------------------------- per-image annotations


def _apply_bboxes(path: Path, records: dict[str, ImageRecord], columns: tuple[str, ...]) -> None:
    """Bounding boxes are the last four columns; in-shop/consumer-to-shop files also give clothes and source type."""
    for row in read_list(path, columns):
        row.expect_columns(len(columns), " ".join(columns))
        record = lookup(row, records)
        if "clothes_type" in columns:
            record.clothes_type = _clothes_type(row, 1)
        if "source_type" in columns:
            record.domain = _SOURCE_DOMAINS[row.integer(2, "source_type 1 (shop) or 2 (consumer)", (1, 2))]
        elif "pose_type" in columns:
            row.integer(2, "an integer pose_type")
        first = len(columns) - 4
        x1, y1, x2, y2 = (row.integer(first + i, f"an integer bounding-box {_BBOX_COLUMNS[i]}") for i in range(4))
        record.bbox = (x1, y1, x2, y2)


def _apply_landmarks(path: Path, records: dict[str, ImageRecord], *, always_eight: bool) -> None:
    """Landmark lines set clothes_type, landmarks and visibility of their image.

    ``always_eight``: the Landmark Detection benchmark pads every line to 8 triples whatever the clothes type.
    """
    for row in read_list(path, _LANDMARK_COLUMNS):
        if len(row.tokens) < 3:
            raise row.error("image_name clothes_type variation_type and landmark triples")
        record = lookup(row, records)
        record.clothes_type, record.landmarks, record.visibility = _parse_landmarks(row, always_eight)


def _parse_landmarks(row: Row, always_eight: bool) -> tuple[ClothesType, np.ndarray, np.ndarray]:
    clothes_type = _clothes_type(row, 1)
    row.integer(2, "an integer variation_type")
    slots = LANDMARK_SLOTS[clothes_type]
    values = row.tokens[3:]
    if len(values) != 3 * len(slots) and not (always_eight and len(values) == 3 * NUM_LANDMARKS):
        expected = f"{len(slots)} landmark triples ({3 * len(slots)} numbers) for clothes_type {int(clothes_type)}"
        if always_eight and len(slots) != NUM_LANDMARKS:
            expected += f" or {NUM_LANDMARKS} triples ({3 * NUM_LANDMARKS} numbers)"
        raise row.error(expected, f"{len(values)} numbers")
    try:
        triples = np.array(values, dtype=np.float32).reshape(-1, 3)[: len(slots)]
    except ValueError:
        raise row.error("numeric landmark visibility and x, y values") from None
    if not np.isfinite(triples).all():
        raise row.error("finite landmark values")
    bad = np.flatnonzero(~np.isin(triples[:, 0], (0, 1, 2)))
    if bad.size:
        raise row.error("a visibility code 0, 1 or 2", values[3 * int(bad[0])])
    landmarks = np.zeros((NUM_LANDMARKS, 2), dtype=np.float32)
    visibility = np.full(NUM_LANDMARKS, VIS_ABSENT, dtype=np.int64)
    landmarks[list(slots)] = triples[:, 1:]
    visibility[list(slots)] = triples[:, 0].astype(np.int64)
    return clothes_type, landmarks, visibility


def _load_vocabularies(
    root: Path, records: dict[str, ImageRecord], benchmark: str, *, required: bool
) -> tuple[list[Category], list[Attribute]]:
    """Category and attribute files, each pair loaded when present (or demanded, for the attribute benchmark).

    Our synthetic generator writes these into retrieval folders too, so every head can train on every benchmark.
    """
    categories: list[Category] = []
    attributes: list[Attribute] = []
    if _pair_present(root, CATEGORY_CLOTH, CATEGORY_IMG, benchmark, required):
        categories = read_categories(root / CATEGORY_CLOTH)
        apply_category_labels(root / CATEGORY_IMG, records, categories)
        for record in records.values():
            if record.clothes_type is None and record.category is not None:
                record.clothes_type = categories[record.category].clothes_type
    if _pair_present(root, ATTR_CLOTH, ATTR_IMG, benchmark, required):
        attributes = read_attributes(root / ATTR_CLOTH)
        apply_attribute_labels(root / ATTR_IMG, records, len(attributes))
    return categories, attributes


def _pair_present(root: Path, vocabulary: str, labels: str, benchmark: str, required: bool) -> bool:
    """A vocabulary file is useless without its label file and vice versa: both or neither."""
    if not required and not (root / vocabulary).is_file() and not (root / labels).is_file():
        return False
    require_file(root, vocabulary, benchmark)
    require_file(root, labels, benchmark)
    return True


def _apply_optional(root: Path, relative: str, apply: Callable[[Path], None]) -> None:
    if (root / relative).is_file():
        apply(root / relative)


# ------------------------------------------------------------------------------------------------ loaders


def load_inshop(root: str | Path) -> Benchmark:
    """In-shop Clothes Retrieval: shop images with item ids, split into train / query / gallery."""
    root = Path(root)
    item_ids = _read_item_ids(root, ITEM_INSHOP)
    columns = ("image_name", "item_id", "evaluation_status")
    records = _read_partition(require_file(root, PARTITION, "inshop"), columns, _RETRIEVAL_SPLITS, item_ids)
    for record in records.values():
        record.domain = "shop"
    _apply_optional(root, BBOX_INSHOP, lambda p: _apply_bboxes(p, records, _INSHOP_BBOX_COLUMNS))
    _apply_optional(root, LANDMARKS_INSHOP, lambda p: _apply_landmarks(p, records, always_eight=False))
    categories, attributes = _load_vocabularies(root, records, "inshop", required=False)
    return Benchmark("inshop", root, list(records.values()), categories, attributes)


def load_consumer2shop(root: str | Path) -> PairBenchmark:
    """Consumer-to-shop Clothes Retrieval: one record per distinct image plus the published pairs.

    Only the partition file is required; the item list, when present, must list every pair's item id. Without
    landmark, category or attribute files the records carry item ids, domains and splits only.
    """
    root = Path(root)
    item_ids = _read_item_ids(root, ITEM_C2S)
    records, pairs = _read_pairs(require_file(root, PARTITION, "consumer2shop"), item_ids)
    _apply_optional(root, BBOX_C2S, lambda p: _apply_bboxes(p, records, _C2S_BBOX_COLUMNS))
    _apply_optional(root, LANDMARKS_C2S, lambda p: _apply_landmarks(p, records, always_eight=False))
    categories, attributes = _load_vocabularies(root, records, "consumer2shop", required=False)
    return PairBenchmark("consumer2shop", root, list(records.values()), categories, attributes, pairs=pairs)


def load_attributes(root: str | Path) -> Benchmark:
    """Category and Attribute Prediction: 50 categories, 1000 attributes, bbox and landmarks per image."""
    root = Path(root)
    columns = ("image_name", "evaluation_status")
    records = _read_partition(require_file(root, PARTITION, "attributes"), columns, _TRAIN_VAL_TEST)
    _apply_optional(root, BBOX, lambda p: _apply_bboxes(p, records, _PLAIN_BBOX_COLUMNS))
    _apply_optional(root, LANDMARKS, lambda p: _apply_landmarks(p, records, always_eight=False))
    categories, attributes = _load_vocabularies(root, records, "attributes", required=True)
    return Benchmark("attributes", root, list(records.values()), categories, attributes)


def load_landmarks(root: str | Path) -> Benchmark:
    """Fashion Landmark Detection: landmarks (8 triples per line) and bounding boxes."""
    root = Path(root)
    columns = ("image_name", "evaluation_status")
    records = _read_partition(require_file(root, PARTITION, "landmarks"), columns, _TRAIN_VAL_TEST)
    _apply_landmarks(require_file(root, LANDMARKS, "landmarks"), records, always_eight=True)
    _apply_optional(root, BBOX, lambda p: _apply_bboxes(p, records, _PLAIN_BBOX_COLUMNS))
    return Benchmark("landmarks", root, list(records.values()))


_LOADERS: dict[str, Callable[[Path], Benchmark]] = {
    "inshop": load_inshop,
    "consumer2shop": load_consumer2shop,
    "attributes": load_attributes,
    "landmarks": load_landmarks,
    "folder": load_folder,
}


def _detect_benchmark(root: Path) -> str:
    """Name the benchmark whose signature files exist under ``root`` (see ``_SIGNATURES`` for the order).

    A folder with none of them and no partition file, whose subfolders hold images, is a product-photo folder.
    """
    for name, files in _SIGNATURES.items():
        if any((root / relative).is_file() for relative in files):
            return name
    if not (root / PARTITION).is_file() and has_product_folders(root):
        return "folder"
    looked_for = "; ".join(f"{name}: {' or '.join(files)}" for name, files in _SIGNATURES.items())
    raise DataFormatError(
        root,
        None,
        f"a DeepFashion benchmark folder with one of ({looked_for}), or product photos in ROOT/PRODUCT_ID/*.jpg",
        "none of them",
    )


def load_benchmark(root: str | Path, benchmark: str | None = None) -> Benchmark:
    """Load a benchmark folder by name, or detect which benchmark it is from the files it holds."""
    root = Path(root)
    name = benchmark if benchmark is not None else _detect_benchmark(root)
    if name not in _LOADERS:
        raise InvalidInput(f"unknown benchmark {name!r}: expected one of {', '.join(BENCHMARKS)}")
    return _LOADERS[name](root)
