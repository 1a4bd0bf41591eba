"""A plain folder of product photos, ``ROOT/PRODUCT_ID/*.jpg``, loaded as a consumer-to-shop benchmark.

One subfolder per product; its name is the item id. Photos are ``.jpg``, ``.jpeg``, ``.png`` or ``.webp`` in
any letter case, directly in the product folder or in subfolders of it. A photo is a consumer (shopper) photo
when its file name starts with ``consumer`` (or DeepFashion's ``comsumer`` spelling), in any letter case, or
when it lies under a ``consumer/`` folder inside its product folder (``P123/consumer/x.jpg``); every other
photo is a shop photo. Names starting with a dot and ``__MACOSX`` folders (archive debris) are skipped.

Split: whole products are held out, deterministically and without a file to keep: a product is in split
``test`` when ``int(sha1(product_id).hexdigest(), 16) % TEST_ONE_IN == 0`` (about one in five), otherwise in
``train``. The benchmark is named ``consumer2shop`` so training and evaluation treat it like DeepFashion's
consumer-to-shop one: consumer photos of the test products are the queries, shop photos the gallery.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path, PurePosixPath

from shared.data.records import ImageRecord, PairBenchmark
from shared.errors import InvalidInput

__all__ = [
    "CONSUMER_FOLDER",
    "CONSUMER_PREFIXES",
    "IMAGE_SUFFIXES",
    "TEST_ONE_IN",
    "has_product_folders",
    "load_folder",
    "product_split",
]

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp"})
CONSUMER_PREFIXES: tuple[str, ...] = ("consumer", "comsumer")  # compared lower-case
CONSUMER_FOLDER = "consumer"  # compared lower-case
TEST_ONE_IN = 5  # one product in TEST_ONE_IN (by sha1 of its id) goes to split "test"

_IGNORED_FOLDERS = frozenset({"__MACOSX"})
_EXPECTED = "expected ROOT/PRODUCT_ID/*.jpg (or .jpeg, .png, .webp): one folder per product holding its photos"


def product_split(product_id: str) -> str:
    """``test`` when ``int(sha1(product_id).hexdigest(), 16) % TEST_ONE_IN == 0``, else ``train``."""
    digest = int(hashlib.sha1(product_id.encode("utf-8")).hexdigest(), 16)
    return "test" if digest % TEST_ONE_IN == 0 else "train"


def _domain(relative: PurePosixPath) -> str:
    """``relative`` is the photo's path inside its product folder."""
    folders = (part.lower() for part in relative.parts[:-1])
    if relative.name.lower().startswith(CONSUMER_PREFIXES) or CONSUMER_FOLDER in folders:
        return "consumer"
    return "shop"


def _skipped(name: str) -> bool:
    return name.startswith(".") or name in _IGNORED_FOLDERS


def _is_image(name: str) -> bool:
    return not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_SUFFIXES


def _photos(product: Path) -> list[PurePosixPath]:
    """Every photo under ``product``, as paths relative to it, sorted as strings."""

    def fail(error: OSError) -> None:
        raise InvalidInput(f"{error.filename}: cannot read the product folder ({error.strerror}); {_EXPECTED}")

    photos = []
    for folder, subfolders, files in os.walk(product, onerror=fail):
        subfolders[:] = [name for name in subfolders if not _skipped(name)]
        inside = PurePosixPath(Path(folder).relative_to(product).as_posix())
        photos.extend(inside / name for name in files if _is_image(name))
    return sorted(photos, key=str)


def _product_folders(root: Path) -> tuple[list[Path], list[str]]:
    """The product folders under ``root`` (sorted) and the names of images lying loose in ``root`` itself."""
    if not root.is_dir():
        raise InvalidInput(f"{root}: no such folder; {_EXPECTED}")
    try:
        entries = sorted(root.iterdir())
    except OSError as error:
        raise InvalidInput(f"{root}: cannot read the folder ({error.strerror}); {_EXPECTED}") from None
    products = [entry for entry in entries if not _skipped(entry.name) and entry.is_dir()]
    loose = [entry.name for entry in entries if _is_image(entry.name) and entry.is_file()]
    return products, loose


def has_product_folders(root: Path) -> bool:
    """Whether some subfolder of ``root`` holds an image (stops at the first one found), for detection."""
    if not root.is_dir():
        return False
    try:
        folders = [entry for entry in root.iterdir() if not _skipped(entry.name) and entry.is_dir()]
    except OSError:
        return False
    for folder in folders:
        for _, subfolders, files in os.walk(folder):
            subfolders[:] = [name for name in subfolders if not _skipped(name)]
            if any(_is_image(name) for name in files):
                return True
    return False


def load_folder(root: str | Path) -> PairBenchmark:
    """Product photos in ``ROOT/PRODUCT_ID/...`` as a consumer-to-shop benchmark (see the module docstring).

    Records come product by product (sorted by id), photos sorted by path, each named relative to ``root``.
    The pairs are every consumer photo of a product with every shop photo of it. Raises InvalidInput for a
    missing or empty root, images outside product folders and product folders without images.
    """
    root = Path(root)
    products, loose = _product_folders(root)
    if loose:
        shown = ", ".join(loose[:3]) + (", ..." if len(loose) > 3 else "")
        raise InvalidInput(
            f"{root}: {len(loose)} image(s) directly in the folder have no product folder ({shown}); {_EXPECTED}"
        )
    if not products:
        raise InvalidInput(f"{root}: no product folders; {_EXPECTED}")
    records: list[ImageRecord] = []
    pairs: list[tuple[str, str, str, str]] = []
    empty: list[str] = []
    for product in products:
        photos = _photos(product)
        if not photos:
            empty.append(product.name)
            continue
        item_id, split = product.name, product_split(product.name)
        product_records = [
            ImageRecord(f"{item_id}/{photo}", split, item_id=item_id, domain=_domain(photo)) for photo in photos
        ]
        records.extend(product_records)
        by_domain = {d: [r.image for r in product_records if r.domain == d] for d in ("consumer", "shop")}
        pairs.extend((c, s, item_id, split) for c in by_domain["consumer"] for s in by_domain["shop"])
    if empty:
        shown = ", ".join(empty[:3]) + (", ..." if len(empty) > 3 else "")
        raise InvalidInput(f"{root}: {len(empty)} product folder(s) hold no images ({shown}); {_EXPECTED}")
    return PairBenchmark("consumer2shop", root, records, pairs=pairs)
