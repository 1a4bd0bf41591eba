"""Typed records every DeepFashion loader returns, whatever benchmark the files come from.

One record per image. Landmarks always use the eight canonical slots of ``shared.vocabulary.LANDMARK_NAMES``;
slots a clothes type does not define are marked ``VIS_ABSENT`` so one tensor shape serves all clothes types.

Image names are kept as the list files spell them (``img/...``); :meth:`Benchmark.path` finds the file whether
the archive's ``Img/img.zip`` was unzipped at the benchmark root or in place under ``Img/``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from shared.errors import InvalidInput
from shared.vocabulary import Attribute, Category, ClothesType

# Folders under a benchmark root where an image named ``img/...`` may sit, tried in this order: the official
# archives ship images as Img/img.zip, which people unzip either at the root (img/...) or in place (Img/img/...).
IMAGE_FOLDERS: tuple[str, ...] = ("", "Img")


@dataclass
class ImageRecord:
    """Everything known about one image. Fields a benchmark does not annotate stay None."""

    image: str  # path relative to the benchmark root, exactly as the files spell it
    split: str  # train / val / test / query / gallery
    item_id: str | None = None
    domain: str | None = None  # "shop" or "consumer"
    clothes_type: ClothesType | None = None
    bbox: tuple[int, int, int, int] | None = None  # x1, y1, x2, y2 in pixels
    landmarks: np.ndarray | None = None  # (8, 2) float32 pixel x, y; zeros where absent
    visibility: np.ndarray | None = None  # (8,) int64 VIS_* codes
    category: int | None = None  # 0-based index into Benchmark.categories
    attributes: np.ndarray | None = None  # (num_attributes,) uint8 multi-hot


@dataclass
class Benchmark:
    """A loaded benchmark: its root folder, vocabularies and one record per image."""

    name: str  # inshop / consumer2shop / attributes / landmarks (a product-photo folder loads as consumer2shop)
    root: Path
    records: list[ImageRecord]
    categories: list[Category] = field(default_factory=list)
    attributes: list[Attribute] = field(default_factory=list)
    # The IMAGE_FOLDERS entry the last image was found in, tried first next time: one stat per image once known.
    _image_folder: str | None = field(default=None, init=False, repr=False, compare=False)

    def split(self, *names: str) -> list[ImageRecord]:
        return [r for r in self.records if r.split in names]

    def path(self, record: ImageRecord) -> Path:
        """The image file of ``record``: ``root/<image>`` or ``root/Img/<image>``, whichever exists.

        The layout found is remembered and tried first, but every record is looked up on its own, so a folder
        with both layouts still works. Raises :class:`~shared.errors.InvalidInput` naming every path tried.
        """
        known = self._image_folder
        order = IMAGE_FOLDERS if known is None else (known, *(f for f in IMAGE_FOLDERS if f != known))
        tried = []
        for folder in order:
            candidate = self.root / folder / record.image
            if candidate.is_file():
                self._image_folder = folder
                return candidate
            tried.append(str(candidate))
        raise InvalidInput(
            f"image {record.image!r} of the {self.name} benchmark not found: tried {', '.join(tried)} "
            "(expected the images under the benchmark root or under Img/, as the archive's Img/img.zip unpacks)"
        )


@dataclass
class PairBenchmark(Benchmark):
    """Consumer-to-shop benchmark: records are per image, the triplet loss needs the published pairs too."""

    pairs: list[tuple[str, str, str, str]] = field(default_factory=list)  # consumer, shop, item_id, split
