"""The procedural DeepFashion generator: file formats, counts, geometry, determinism and the shop/consumer gap.

Everything runs at 128 px (64 px for the larger landmark sample) on a few items so the suite stays fast on two
cores; each benchmark is generated once per module and shared by the tests that read it.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.data.synth import ATTRIBUTES, CATEGORIES, SynthSummary, generate
from shared.data.synth import geometry as geo
from shared.data.synth.catalog import sample_item
from shared.errors import InvalidInput
from shared.vocabulary import ATTRIBUTE_GROUPS, LANDMARK_SLOTS, ClothesType

SIZE = 128
ITEMS = {"inshop": 6, "consumer2shop": 8, "attributes": 12, "landmarks": 12}
CATEGORY_FILES = {
    "Anno/list_category_cloth.txt",
    "Anno/list_category_img.txt",
    "Anno/list_attr_cloth.txt",
    "Anno/list_attr_img.txt",
}
EXPECTED_FILES = {
    "inshop": {
        "Eval/list_eval_partition.txt",
        "Anno/list_bbox_inshop.txt",
        "Anno/list_landmarks_inshop.txt",
        "Anno/list_item_inshop.txt",
    }
    | CATEGORY_FILES,
    "consumer2shop": {
        "Eval/list_eval_partition.txt",
        "Anno/list_bbox_consumer2shop.txt",
        "Anno/list_landmarks_consumer2shop.txt",
    }
    | CATEGORY_FILES,
    "attributes": {"Eval/list_eval_partition.txt", "Anno/list_bbox.txt", "Anno/list_landmarks.txt"} | CATEGORY_FILES,
    "landmarks": {"Eval/list_eval_partition.txt", "Anno/list_bbox.txt", "Anno/list_landmarks.txt"},
}
LANDMARK_FILE = {
    "inshop": "Anno/list_landmarks_inshop.txt",
    "consumer2shop": "Anno/list_landmarks_consumer2shop.txt",
    "attributes": "Anno/list_landmarks.txt",
    "landmarks": "Anno/list_landmarks.txt",
}
BBOX_FILE = {
    "inshop": "Anno/list_bbox_inshop.txt",
    "consumer2shop": "Anno/list_bbox_consumer2shop.txt",
    "attributes": "Anno/list_bbox.txt",
    "landmarks": "Anno/list_bbox.txt",
}


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> dict[str, SynthSummary]:
    base = tmp_path_factory.mktemp("synth")
    return {
        name: generate(name, base / name, items, seed=7, image_size=SIZE, workers=1, progress=False)
        for name, items in ITEMS.items()
    }


def data_lines(path: Path, header: bool = True) -> list[list[str]]:
    """Tokens of each entry, after checking that line 1 is the entry count."""
    lines = path.read_text(encoding="utf-8").splitlines()
    body = lines[2:] if header else lines[1:]
    assert int(lines[0]) == len(body), f"{path}: count line says {lines[0]}, found {len(body)} entries"
    assert all(line.strip() for line in body), f"{path}: empty entry line"
    return [line.split() for line in body]


def partition_images(summary: SynthSummary) -> list[str]:
    rows = data_lines(summary.root / "Eval/list_eval_partition.txt")
    if summary.benchmark == "consumer2shop":
        return list(dict.fromkeys(name for row in rows for name in row[:2]))
    return [row[0] for row in rows]


def all_files(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("benchmark", list(ITEMS))
def test_writes_exactly_the_published_files(generated: dict[str, SynthSummary], benchmark: str) -> None:
    root = generated[benchmark].root
    written = {str(p.relative_to(root)) for p in root.rglob("*.txt")}
    assert written == EXPECTED_FILES[benchmark]
    for name in written:
        data_lines(root / name, header=name != "Anno/list_item_inshop.txt")


@pytest.mark.parametrize("benchmark", list(ITEMS))
def test_every_partition_image_exists_and_decodes(generated: dict[str, SynthSummary], benchmark: str) -> None:
    summary = generated[benchmark]
    names = partition_images(summary)
    assert len(names) == summary.images == len(list(summary.root.glob("img/**/*.jpg")))
    assert summary.items == ITEMS[benchmark]
    for name in names:
        with Image.open(summary.root / name) as img:
            img.load()
            assert img.size == (SIZE, SIZE) and img.format == "JPEG"
    # Every per-image file lists each image exactly once.
    per_image = [BBOX_FILE[benchmark], LANDMARK_FILE[benchmark]]
    if benchmark != "landmarks":
        per_image += ["Anno/list_category_img.txt", "Anno/list_attr_img.txt"]
    for rel in per_image:
        assert sorted(row[0] for row in data_lines(summary.root / rel)) == sorted(names), rel


def test_image_names_follow_each_benchmark(generated: dict[str, SynthSummary]) -> None:
    inshop = partition_images(generated["inshop"])
    assert all(len(n.split("/")) == 5 and n.split("/")[1] in ("MEN", "WOMEN") for n in inshop)
    assert all(n.split("/")[3].startswith("id_") and len(n.split("/")[3]) == 11 for n in inshop)
    assert {n.rsplit("_", 1)[-1] for n in inshop} >= {"front.jpg", "side.jpg", "back.jpg"}
    c2s = partition_images(generated["consumer2shop"])
    assert any(n.endswith("/comsumer_01.jpg") for n in c2s) and any(n.endswith("/shop_01.jpg") for n in c2s)
    assert not any("consumer_" in n for n in c2s)
    assert all(n.split("/")[1] in ("CLOTHING", "DRESSES", "TOPS", "TROUSERS") for n in c2s)
    attrs = partition_images(generated["attributes"])
    assert all(len(n.split("/")) == 3 and n.split("/")[2].startswith("img_") for n in attrs)
    assert all(n.startswith("img/img_") for n in partition_images(generated["landmarks"]))


# ---------------------------------------------------------------------------------------------- contents


@pytest.mark.parametrize("benchmark", list(ITEMS))
def test_landmarks_and_boxes_fit_the_image(generated: dict[str, SynthSummary], benchmark: str) -> None:
    root = generated[benchmark].root
    seen = Counter()
    for row in data_lines(root / LANDMARK_FILE[benchmark]):
        clothes_type, variation = ClothesType(int(row[1])), int(row[2])
        assert 1 <= variation <= 5
        values = [int(v) for v in row[3:]]
        used = len(LANDMARK_SLOTS[clothes_type])
        if benchmark == "landmarks":
            assert len(values) == 24 and values[3 * used :] == [0] * (24 - 3 * used)
        else:
            assert len(values) == 3 * used
        for vis, x, y in np.array(values[: 3 * used]).reshape(-1, 3):
            seen[vis] += 1
            assert vis in (0, 1, 2)
            assert 0 <= x < SIZE and 0 <= y < SIZE
            if vis == 2:  # truncated: clipped onto the border
                assert x in (0, SIZE - 1) or y in (0, SIZE - 1)
    assert seen[0] > 0
    for row in data_lines(root / BBOX_FILE[benchmark]):
        x1, y1, x2, y2 = (int(v) for v in row[-4:])
        assert 0 <= x1 < x2 < SIZE and 0 <= y1 < y2 < SIZE
        assert len(row[-1]) >= 3  # zero-padded like the released files


def test_inshop_splits_items_then_photos(generated: dict[str, SynthSummary]) -> None:
    summary = generated["inshop"]
    rows = data_lines(summary.root / "Eval/list_eval_partition.txt")
    by_item: dict[str, list[str]] = {}
    for _, item, status in rows:
        by_item.setdefault(item, []).append(status)
    assert sorted(by_item) == [row[0] for row in data_lines(summary.root / "Anno/list_item_inshop.txt", False)]
    train = [i for i, s in by_item.items() if set(s) == {"train"}]
    test = [i for i, s in by_item.items() if "train" not in s]
    assert len(train) + len(test) == len(by_item) and len(train) == len(by_item) // 2
    assert all({"query", "gallery"} <= set(by_item[i]) for i in test)
    assert all(3 <= len(s) <= 5 for s in by_item.values())
    for row in data_lines(summary.root / "Anno/list_bbox_inshop.txt"):
        view = row[0].rsplit("_", 1)[-1][:-4]
        assert int(row[2]) == {"front": 1, "side": 2, "back": 3}.get(view, 1)


def test_consumer2shop_pairs_join_consumer_and_shop_photos_of_one_item(generated: dict[str, SynthSummary]) -> None:
    summary = generated["consumer2shop"]
    rows = data_lines(summary.root / "Eval/list_eval_partition.txt")
    split_of_item: dict[str, str] = {}
    for consumer, shop, item, status in rows:
        assert "/comsumer_" in consumer and "/shop_" in shop
        assert consumer.split("/")[3] == shop.split("/")[3] == item
        assert split_of_item.setdefault(item, status) == status
    assert Counter(split_of_item.values()).keys() == {"train", "val", "test"}
    sources = {row[0]: int(row[2]) for row in data_lines(summary.root / "Anno/list_bbox_consumer2shop.txt")}
    assert all(sources[n] == (2 if "comsumer" in n else 1) for n in sources)


@pytest.mark.parametrize("benchmark", ["attributes", "landmarks"])
def test_single_image_benchmarks_split_train_val_test(generated: dict[str, SynthSummary], benchmark: str) -> None:
    rows = data_lines(generated[benchmark].root / "Eval/list_eval_partition.txt")
    counts = Counter(status for _, status in rows)
    assert counts.keys() == {"train", "val", "test"} and counts["train"] > counts["val"]


def test_category_and_attribute_vocabularies(generated: dict[str, SynthSummary]) -> None:
    root = generated["attributes"].root
    categories = [row for row in data_lines(root / "Anno/list_category_cloth.txt")]
    assert len(categories) >= 8 and {int(row[-1]) for row in categories} == {1, 2, 3}
    attributes = [(" ".join(row[:-1]), int(row[-1])) for row in data_lines(root / "Anno/list_attr_cloth.txt")]
    assert len(attributes) >= 40 and {t for _, t in attributes} == {1, 2, 3, 4, 5}
    assert ("abstract print", 1) in attributes  # a name with a space, padded like the released file
    assert attributes == [(name, ATTRIBUTE_GROUPS.index(group) + 1) for name, group in ATTRIBUTES]
    labels = data_lines(root / "Anno/list_category_img.txt")
    assert all(1 <= int(row[1]) <= len(categories) for row in labels)
    for row in data_lines(root / "Anno/list_attr_img.txt"):
        values = [int(v) for v in row[1:]]
        assert len(values) == len(attributes) and set(values) <= {1, -1} and values.count(1) >= 2


def test_items_cover_vocabularies_consistently() -> None:
    items = [sample_item(0, "inshop", i) for i in range(600)]
    assert {CATEGORIES[it.category].clothes_type for it in items} == set(ClothesType)
    assert len({it.category for it in items}) == len(CATEGORIES) >= 8
    seen = Counter(a for it in items for a in it.attributes)
    assert set(seen) == {name for name, _ in ATTRIBUTES}, "every attribute must be reachable"
    for it in items:
        kind = it.spec.clothes_type
        if kind == ClothesType.LOWER:
            assert not it.attributes & {"sleeveless", "short sleeve", "long sleeve", "v-neck", "crew neck", "hood"}
        if kind == ClothesType.UPPER:
            assert not it.attributes & {"mini", "midi", "maxi", "skinny", "wide-leg", "belt"}
        else:
            assert "cropped" not in it.attributes
        assert len(it.attributes & {"sleeveless", "short sleeve", "long sleeve"}) <= 1
        assert len(it.attributes & {name for name, group in ATTRIBUTES if group == "texture"}) == 1
        assert len(it.attributes & {name for name, group in ATTRIBUTES if group == "fabric"}) == 1


def test_items_sharing_category_and_attributes_still_differ() -> None:
    items = [sample_item(0, "consumer2shop", i) for i in range(400)]
    groups: dict[tuple, list] = {}
    for it in items:
        groups.setdefault((it.category, it.attributes), []).append(it)
    shared = [g for g in groups.values() if len(g) > 1]
    assert shared, "some items should share category and attributes"
    for group in shared:
        assert len({(it.colors, tuple(sorted(it.shape.items()))) for it in group}) == len(group)


# ---------------------------------------------------------------------------------------------- geometry


@pytest.mark.parametrize(
    "matrix",
    [
        geo.translation(7.0, -4.0),
        geo.compose(geo.translation(64, 64), geo.rotation(25), geo.scaling(1.4, 0.9), geo.translation(-64, -64)),
        geo.compose(
            geo.translation(70, 60), geo.scaling(64), geo.projective(0.3, -0.25), geo.scaling(1 / 64),
            geo.rotation(-15), geo.scaling(-1.2, 1.2), geo.translation(-64, -64),
        ),
    ],
    ids=["shift", "similarity", "perspective-mirror"],
)  # fmt: skip
def test_homography_moves_points_exactly_like_pixels(matrix: np.ndarray) -> None:
    canvas = np.zeros((SIZE, SIZE), np.float32)
    canvas[45, 52] = 255.0  # pixel (x=52, y=45): centre (52.5, 45.5)
    warped = np.asarray(geo.warp(Image.fromarray(canvas, "F"), matrix, (SIZE, SIZE), Image.BILINEAR))
    ys, xs = np.nonzero(warped > 0)
    weight = warped[ys, xs]
    found = np.array([(xs * weight).sum() / weight.sum() + 0.5, (ys * weight).sum() / weight.sum() + 0.5])
    expected = geo.apply(matrix, np.array([[52.5, 45.5]]))[0]
    assert np.abs(found - expected).max() < 0.35
    assert geo.is_mirrored(matrix) == (np.linalg.det(matrix[:2, :2]) < 0)


def test_consumer_photos_truncate_and_occlude_landmarks(tmp_path: Path) -> None:
    summary = generate("landmarks", tmp_path, 60, seed=3, image_size=64, workers=1, progress=False)
    codes = Counter()
    variations = Counter()
    for row in data_lines(summary.root / "Anno/list_landmarks.txt"):
        variations[int(row[2])] += 1
        used = 3 * len(LANDMARK_SLOTS[ClothesType(int(row[1]))])
        codes.update(int(v) for v in row[3 : 3 + used : 3])
    assert codes[0] > codes[1] > 0 and codes[2] > 0
    assert len(variations) >= 4


def test_consumer_photos_differ_from_shop_photos(generated: dict[str, SynthSummary]) -> None:
    """Clutter, casts and compression: consumer backgrounds vary far more than studio backdrops."""
    root = generated["consumer2shop"].root

    def border_std(name: str) -> float:
        arr = np.asarray(Image.open(root / name).convert("RGB"), np.float32)
        frame = np.concatenate([arr[:6].reshape(-1, 3), arr[-6:].reshape(-1, 3), arr[:, :6].reshape(-1, 3)])
        return float(frame.std(axis=0).mean())

    names = partition_images(generated["consumer2shop"])
    consumer = [border_std(n) for n in names if "comsumer" in n]
    shop = [border_std(n) for n in names if "/shop_" in n]
    assert consumer and shop
    assert np.median(consumer) > 2 * np.median(shop) + 5


# ----------------------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_bytes_for_any_worker_count(
    generated: dict[str, SynthSummary], tmp_path: Path
) -> None:
    reference = generated["consumer2shop"]
    again = generate("consumer2shop", tmp_path / "w2", ITEMS["consumer2shop"], seed=7, image_size=SIZE, workers=2,
                     progress=False)  # fmt: skip
    first, second = all_files(reference.root), all_files(again.root)
    assert first.keys() == second.keys()
    assert [k for k in first if first[k] != second[k]] == []


def test_another_seed_gives_other_data(generated: dict[str, SynthSummary], tmp_path: Path) -> None:
    reference = generated["attributes"]
    other = generate("attributes", tmp_path, ITEMS["attributes"], seed=8, image_size=SIZE, workers=1, progress=False)
    for rel in ("Anno/list_landmarks.txt", "Anno/list_attr_img.txt"):
        assert (reference.root / rel).read_bytes() != (other.root / rel).read_bytes()
    again = generate("attributes", tmp_path / "again", 3, seed=7, image_size=SIZE, workers=1, progress=False)
    name = partition_images(again)[0]
    assert (again.root / name).read_bytes() == (reference.root / name).read_bytes()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"benchmark": "fashionmnist"}, "benchmark"),
        ({"items": 0}, "items"),
        ({"image_size": 16}, "image_size"),
        ({"workers": 0}, "workers"),
    ],
)
def test_rejects_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    args = {"benchmark": "inshop", "out": tmp_path, "items": 2} | kwargs
    with pytest.raises(InvalidInput, match=message):
        generate(**args)


# ------------------------------------------------------------------------------------------- round trip


@pytest.mark.skipif(importlib.util.find_spec("shared.data.deepfashion") is None, reason="loader not present")
@pytest.mark.parametrize("benchmark", list(ITEMS))
def test_loader_reads_every_generated_benchmark(generated: dict[str, SynthSummary], benchmark: str) -> None:
    from shared.data.deepfashion import load_benchmark

    summary = generated[benchmark]
    loaded = load_benchmark(summary.root, benchmark)
    assert len(loaded.records) == summary.images
    assert all(r.landmarks is not None and r.bbox is not None for r in loaded.records)
    if benchmark != "landmarks":
        assert len(loaded.categories) == len(CATEGORIES) and len(loaded.attributes) == len(ATTRIBUTES)
        assert all(r.category is not None and r.attributes is not None for r in loaded.records)
