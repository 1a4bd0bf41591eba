"""Category and attribute vocabularies and per-image labels, as the DeepFashion release writes them
(list_category_cloth/img.txt, list_attr_cloth/img.txt)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from shared.data.listfile import Row, lookup, read_list
from shared.data.records import ImageRecord
from shared.vocabulary import ATTRIBUTE_GROUPS, Attribute, Category, ClothesType


def _name_and_type(row: Row, columns: str) -> tuple[str, int]:
    """Split ``name  type`` where the name may hold spaces (``abstract print  1``): the type is the last token.

    Returns the name (spaces inside kept as written) and the index of the type token.
    """
    if len(row.tokens) < 2:
        raise row.error(f"2 columns ({columns})", f"{len(row.tokens)} columns")
    return row.text.rsplit(None, 1)[0].strip(), len(row.tokens) - 1


def read_categories(path: Path) -> list[Category]:
    categories = []
    for row in read_list(path, ("category_name", "category_type")):
        name, index = _name_and_type(row, "category_name category_type")
        clothes_type = ClothesType(row.integer(index, "category_type 1 (upper), 2 (lower) or 3 (full)", (1, 2, 3)))
        categories.append(Category(name, clothes_type))
    return categories


def read_attributes(path: Path) -> list[Attribute]:
    attributes = []
    expected = "attribute_type 1..5 (" + ", ".join(ATTRIBUTE_GROUPS) + ")"
    for row in read_list(path, ("attribute_name", "attribute_type")):
        name, index = _name_and_type(row, "attribute_name attribute_type")
        group = ATTRIBUTE_GROUPS[row.integer(index, expected, range(1, len(ATTRIBUTE_GROUPS) + 1)) - 1]
        attributes.append(Attribute(name, group))
    return attributes


def apply_category_labels(path: Path, records: dict[str, ImageRecord], categories: list[Category]) -> None:
    expected = f"an integer category label between 1 and {len(categories)}"
    for row in read_list(path, ("image_name", "category_label")):
        row.expect_columns(2, "image_name category_label")
        record = lookup(row, records)
        record.category = row.integer(1, expected, range(1, len(categories) + 1)) - 1


def apply_attribute_labels(path: Path, records: dict[str, ImageRecord], num_attributes: int) -> None:
    """Multi-hot attributes: the files say -1 (negative), 0 (unknown) or 1 (positive); only 1 counts."""
    for row in read_list(path, ("image_name", "attribute_labels")):
        if len(row.tokens) - 1 != num_attributes:
            raise row.error(f"{num_attributes} attribute values after the image name", f"{len(row.tokens) - 1}")
        record = lookup(row, records)
        try:
            labels = np.array(row.tokens[1:], dtype=np.int8)
        except (ValueError, OverflowError):
            labels = None
        if labels is None or not np.isin(labels, (-1, 0, 1)).all():
            bad = next(token for token in row.tokens[1:] if token not in ("-1", "0", "1"))
            raise row.error("attribute values -1, 0 or 1", bad)
        record.attributes = (labels == 1).astype(np.uint8)
