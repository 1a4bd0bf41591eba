"""Outfit scenes (several garments per photo) in DeepFashion2's layout: what the generator writes, what the
loader reads back, and the clear errors on malformed annotation files."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from shared.data.outfits import is_outfits, load_outfits
from shared.data.synth import generate
from shared.data.synth.catalog import sample_item
from shared.data.synth.outfits import garment_class, plan_outfits
from shared.errors import InvalidInput
from shared.vocabulary import GARMENT_CLASSES, VIS_ABSENT, VIS_VISIBLE

SIZE = 128
ITEMS = 24


@pytest.fixture(scope="module")
def outfits(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("outfits")
    summary = generate("outfits", root, ITEMS, seed=5, image_size=SIZE, workers=1, progress=False)
    assert summary.items == ITEMS and summary.images > ITEMS
    return root


def test_every_item_is_in_exactly_one_outfit_of_one_to_three_garments() -> None:
    specs = [sample_item(2, "outfits", i) for i in range(60)]
    plan = plan_outfits(2, specs)
    worn = [i for o in plan for i in o.items]
    assert sorted(worn) == list(range(60))
    assert {len(o.items) for o in plan} <= {1, 2, 3}
    assert max(len(o.items) for o in plan) == 3
    for o in plan:  # drawing order: lower garments first, outer layers last
        classes = [garment_class(specs[i]) for i in o.items]
        if "outer" in classes:
            assert classes[-1] == "outer"
        if "lower" in classes:
            assert classes[0] == "lower"


def test_writes_deepfashion2_layout_with_several_garments_per_user_photo(outfits: Path) -> None:
    bench = load_outfits(outfits)
    assert is_outfits(outfits)
    assert {i.split for i in bench.images} == {"train", "validation", "test"}
    users = [i for i in bench.images if i.domain == "consumer"]
    shops = [i for i in bench.images if i.domain == "shop"]
    assert users and shops
    assert all(len(i.garments) == 1 for i in shops)
    counts = Counter(len(i.garments) for i in users)
    assert counts[2] + counts[3] > 0, counts
    assert max(counts) <= 3
    for image in bench.images:
        with Image.open(bench.path(image)) as im:
            assert im.size == (SIZE, SIZE)
        for g in image.garments:
            x1, y1, x2, y2 = g.box
            assert 0 <= x1 < x2 < SIZE and 0 <= y1 < y2 < SIZE
            assert g.garment_class in GARMENT_CLASSES
            assert g.item_id and g.style > 0
            visible = g.visibility == VIS_VISIBLE
            assert (g.landmarks[visible] >= 0).all() and (g.landmarks[visible] < SIZE).all()
            assert (g.visibility != VIS_ABSENT).sum() >= 4


def test_every_user_garment_has_shop_photos_in_its_own_split(outfits: Path) -> None:
    bench = load_outfits(outfits)
    shop_items = {(i.split, i.pair_id, i.garments[0].item_id) for i in bench.images if i.domain == "shop"}
    for image in bench.images:
        if image.domain == "consumer":
            for g in image.garments:
                assert (image.split, image.pair_id, g.item_id) in shop_items
    by_split = {s: {g.item_id for i in bench.split(s) for g in i.garments} for s in ("train", "validation", "test")}
    assert not by_split["train"] & by_split["test"]
    assert not by_split["train"] & by_split["validation"]


def test_annotations_follow_deepfashion2_fields(outfits: Path) -> None:
    anno = json.loads(next((outfits / "train" / "annos").glob("*.json")).read_text())
    assert anno["source"] in ("user", "shop") and isinstance(anno["pair_id"], int)
    item = anno["item1"]
    for key in ("category_id", "category_name", "style", "bounding_box", "landmarks", "scale", "occlusion",
                "zoom_in", "viewpoint"):
        assert key in item
    assert len(item["landmarks"]) == 24 and set(item["landmarks"][2::3]) <= {0, 1, 2}
    assert {item["scale"], item["occlusion"], item["zoom_in"], item["viewpoint"]} <= {1, 2, 3}


def _digest(root: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*")):
        if path.is_file():
            digest.update(str(path.relative_to(root)).encode())
            digest.update(path.read_bytes())
    return digest.hexdigest()


def test_same_seed_same_bytes_for_any_worker_count(outfits: Path, tmp_path: Path) -> None:
    generate("outfits", tmp_path / "two", ITEMS, seed=5, image_size=SIZE, workers=2, progress=False)
    assert _digest(tmp_path / "two") == _digest(outfits)


def _write(root: Path, anno: object, raw: str | None = None) -> Path:
    folder = root / "train" / "annos"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "000001.json").write_text(raw if raw is not None else json.dumps(anno))
    return root


GOOD_ITEM = {"category_id": 1, "category_name": "Tee", "style": 1, "bounding_box": [10, 10, 50, 60],
             "landmarks": [0] * 24, "garment_class": "upper", "clothes_type": 1}


@pytest.mark.parametrize(
    ("anno", "raw", "message"),
    [
        (None, "{not json", "expected one JSON object per image"),
        ([1, 2], None, "expected a JSON object"),
        ({"source": "street", "pair_id": 1}, None, "expected source 'user' or 'shop'"),
        ({"source": "user", "pair_id": "7"}, None, "expected an integer pair_id"),
        ({"source": "user", "pair_id": 1, "item1": {**GOOD_ITEM, "bounding_box": [50, 10, 10, 60]}}, None,
         "expected 0 <= x1 < x2"),
        ({"source": "user", "pair_id": 1, "item1": {**GOOD_ITEM, "bounding_box": [1, 2, 3]}}, None,
         "expected [x1, y1, x2, y2]"),
        ({"source": "user", "pair_id": 1, "item1": {**GOOD_ITEM, "landmarks": [0] * 9}}, None, "expected 24 numbers"),
        ({"source": "user", "pair_id": 1, "item1": {**GOOD_ITEM, "landmarks": [0, 0, 5] * 8}}, None,
         "expected visibility 0, 1 or 2"),
        ({"source": "user", "pair_id": 1, "item1": {k: v for k, v in GOOD_ITEM.items() if k != "category_id"}},
         None, "expected a 'category_id' field"),
        ({"source": "user", "pair_id": 1, "item1": {**GOOD_ITEM, "garment_class": "hat", "clothes_type": None}},
         None, "expected one of upper, lower, full, outer"),
    ],
)
def test_malformed_annotation_files_fail_clearly(tmp_path: Path, anno: object, raw: str | None, message: str) -> None:
    root = _write(tmp_path, anno, raw)
    with pytest.raises(InvalidInput) as info:
        load_outfits(root)
    assert message in str(info.value)
    assert "000001.json" in str(info.value) or "pair_id" in message


def test_folder_without_annotations_fails_clearly(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="expected DeepFashion2-style folders"):
        load_outfits(tmp_path)


def test_deepfashion2_visibility_codes_map_to_ours(tmp_path: Path) -> None:
    landmarks = [5, 6, 2, 7, 8, 1] + [0, 0, 0] * 6
    root = _write(tmp_path, {"source": "user", "pair_id": 3, "item1": {**GOOD_ITEM, "landmarks": landmarks}})
    (garment,) = load_outfits(root).images[0].garments
    assert garment.visibility.tolist()[:3] == [0, 1, 2]  # visible, occluded, not labelled (a slot tees have)
    assert garment.visibility[4] == VIS_ABSENT  # waistline: tees have none
    assert np.allclose(garment.landmarks[0], [5, 6])
