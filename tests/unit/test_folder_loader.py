"""The product-photo folder loader, ``ROOT/PRODUCT_ID/*.jpg``, against real files written to a temporary folder.

Image contents are never decoded by the loader, so the files hold a few placeholder bytes.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from shared.data.deepfashion import load_benchmark
from shared.data.folder import TEST_ONE_IN, load_folder, product_split
from shared.data.records import PairBenchmark
from shared.errors import DataFormatError, InvalidInput

EXPECTED = "expected ROOT/PRODUCT_ID/*.jpg"

# P001 hashes to train, P003 to test (sha1 % 5 == 0).
PHOTOS = [
    "P001/front.jpg",
    "P001/back.JPEG",
    "P001/consumer_01.jpg",
    "P001/Consumer-street.PNG",
    "P001/consumer/x.webp",
    "P003/shop.jpg",
    "P003/comsumer_01.jpg",  # DeepFashion's spelling
    "P003/details/zoom.png",
    "P003/Consumer/deep/y.jpg",
]
# Files the loader must skip: not images, hidden, or macOS archive debris.
IGNORED = [
    "README.md",
    ".DS_Store",
    "P001/notes.txt",
    "P001/._front.jpg",
    "P003/.thumbs/a.jpg",
    "__MACOSX/P001/._front.jpg",
]


def write_files(root: Path, files: list[str]) -> Path:
    for relative in files:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"placeholder")
    return root


def test_records_domains_splits_and_pairs(tmp_path: Path) -> None:
    bench = load_folder(write_files(tmp_path, PHOTOS + IGNORED))
    assert isinstance(bench, PairBenchmark) and bench.name == "consumer2shop" and bench.root == tmp_path
    assert [(r.image, r.split, r.item_id, r.domain) for r in bench.records] == [
        ("P001/Consumer-street.PNG", "train", "P001", "consumer"),
        ("P001/back.JPEG", "train", "P001", "shop"),
        ("P001/consumer/x.webp", "train", "P001", "consumer"),
        ("P001/consumer_01.jpg", "train", "P001", "consumer"),
        ("P001/front.jpg", "train", "P001", "shop"),
        ("P003/Consumer/deep/y.jpg", "test", "P003", "consumer"),
        ("P003/comsumer_01.jpg", "test", "P003", "consumer"),
        ("P003/details/zoom.png", "test", "P003", "shop"),
        ("P003/shop.jpg", "test", "P003", "shop"),
    ]
    assert bench.categories == [] and bench.attributes == []
    assert all(r.bbox is None and r.landmarks is None and r.category is None for r in bench.records)
    assert len(bench.pairs) == 3 * 2 + 2 * 2
    assert ("P003/comsumer_01.jpg", "P003/shop.jpg", "P003", "test") in bench.pairs
    assert [bench.path(r) for r in bench.records] == [tmp_path / r.image for r in bench.records]


def test_test_split_gives_consumer_queries_and_shop_gallery(tmp_path: Path) -> None:
    bench = load_folder(write_files(tmp_path, PHOTOS))
    test = bench.split("test")
    assert [r.image for r in test if r.domain == "consumer"] == ["P003/Consumer/deep/y.jpg", "P003/comsumer_01.jpg"]
    assert [r.image for r in test if r.domain == "shop"] == ["P003/details/zoom.png", "P003/shop.jpg"]


def test_detected_and_named_folder(tmp_path: Path) -> None:
    root = write_files(tmp_path, PHOTOS + IGNORED)
    expected = [(r.image, r.split, r.domain) for r in load_folder(root).records]
    for bench in (load_benchmark(root), load_benchmark(str(root), "folder")):
        assert bench.name == "consumer2shop"
        assert [(r.image, r.split, r.domain) for r in bench.records] == expected


@pytest.mark.parametrize("product_id", [f"P{i:03d}" for i in range(40)] + ["dress red", "id_00000001", "é"])
def test_split_rule(product_id: str) -> None:
    held_out = int(hashlib.sha1(product_id.encode("utf-8")).hexdigest(), 16) % 5 == 0
    assert TEST_ONE_IN == 5
    assert product_split(product_id) == ("test" if held_out else "train")


def test_split_holds_out_about_one_product_in_five() -> None:
    tests = sum(product_split(f"product-{i}") == "test" for i in range(2000))
    assert 0.17 < tests / 2000 < 0.23


def test_empty_root(tmp_path: Path) -> None:
    write_files(tmp_path, ["README.md"])
    with pytest.raises(InvalidInput) as caught:
        load_folder(tmp_path)
    assert str(caught.value).startswith(f"{tmp_path}: no product folders; {EXPECTED}")


def test_missing_root(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match=f"{tmp_path / 'absent'}: no such folder; expected ROOT/PRODUCT_ID"):
        load_folder(tmp_path / "absent")


def test_images_without_a_product_folder(tmp_path: Path) -> None:
    write_files(tmp_path, [*PHOTOS, "loose.jpg"])
    with pytest.raises(InvalidInput) as caught:
        load_folder(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: 1 image(s) directly in the folder have no product folder (loose.jpg)")
    assert EXPECTED in message


def test_product_without_images(tmp_path: Path) -> None:
    write_files(tmp_path, [*PHOTOS, "P002/notes.txt"])
    (tmp_path / "P004").mkdir()
    with pytest.raises(InvalidInput) as caught:
        load_folder(tmp_path)
    message = str(caught.value)
    assert message.startswith(f"{tmp_path}: 2 product folder(s) hold no images (P002, P004)")
    assert EXPECTED in message


@pytest.mark.parametrize("files", [[], ["a.jpg", "Empty/notes.txt"]], ids=["empty", "no-images-in-subfolders"])
def test_folder_without_product_photos_is_not_detected(tmp_path: Path, files: list[str]) -> None:
    write_files(tmp_path, files)
    with pytest.raises(DataFormatError, match="or product photos in ROOT/PRODUCT_ID/"):
        load_benchmark(tmp_path)


def test_deepfashion_partition_file_is_never_taken_for_a_product_folder(tmp_path: Path) -> None:
    write_files(tmp_path, ["Eval/list_eval_partition.txt", "Img/img/TOPS/id_00000001/shop_01.jpg"])
    with pytest.raises(DataFormatError, match="a DeepFashion benchmark folder"):
        load_benchmark(tmp_path)
