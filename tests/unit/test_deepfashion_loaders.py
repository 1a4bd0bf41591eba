"""DeepFashion loaders against small hand-written files in the released formats, quirks included.

The fixture texts copy the real files' shape: a count line, a column-names line, space-padded columns,
CRLF endings and trailing spaces in one file, a final empty line, ``comsumer`` image names, attribute names
with spaces and -1/0/1 labels. Error cases start from these valid folders and break one line each.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from shared.data.deepfashion import (
    BENCHMARKS,
    PairBenchmark,
    load_attributes,
    load_benchmark,
    load_consumer2shop,
    load_inshop,
    load_landmarks,
)
from shared.data.records import Benchmark, ImageRecord
from shared.errors import DataFormatError, InvalidInput
from shared.vocabulary import VIS_ABSENT, ClothesType

LANDMARK_HEADER = "image_name  clothes_type  variation_type  " + "  ".join(
    f"landmark_visibility_{i}  landmark_location_x_{i}  landmark_location_y_{i}" for i in range(1, 9)
)

# ------------------------------------------------------------------------------------------ in-shop files

INSHOP = {
    "Eval/list_eval_partition.txt": """5
image_name item_id evaluation_status
img/WOMEN/Dresses/id_00000002/02_1_front.jpg                  id_00000002           train
img/WOMEN/Dresses/id_00000002/02_2_side.jpg                   id_00000002           train
img/MEN/Denim/id_00000080/01_1_front.jpg                      id_00000080           query
img/MEN/Denim/id_00000080/01_2_side.jpg                       id_00000080           gallery
img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg           id_00000001           gallery
""",
    # The released item list has no column-names line.
    "Anno/list_item_inshop.txt": """3
id_00000001
id_00000002
id_00000080
""",
    "Anno/list_bbox_inshop.txt": """4
image_name  clothes_type  pose_type  x_1  y_1  x_2  y_2
img/WOMEN/Dresses/id_00000002/02_1_front.jpg                  3  1  050  049  208  235
img/WOMEN/Dresses/id_00000002/02_2_side.jpg                   3  2  060  044  200  240
img/MEN/Denim/id_00000080/01_1_front.jpg                      2  1  072  079  185  256
img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg           1  1  039  012  211  186

""",
    # CRLF line endings and trailing spaces, as some released files have them.
    "Anno/list_landmarks_inshop.txt": (
        "4  \r\n"
        + LANDMARK_HEADER
        + "  \r\n"
        + "img/WOMEN/Dresses/id_00000002/02_1_front.jpg         3  1  0 092 066  0 160 064  1 080 120  0 175 118"
        + "  0 100 140  2 161 141  0 070 230  0 190 229  \r\n"
        + "img/WOMEN/Dresses/id_00000002/02_2_side.jpg          3  2  0 090 060  0 150 061  0 082 121  0 170 119"
        + "  0 101 141  0 160 142  0 072 231  0 188 230\r\n"
        + "img/MEN/Denim/id_00000080/01_1_front.jpg             2  1  0 090 082  0 165 080  1 085 250  2 172 251 \r\n"
        + "img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg  1  1  0 100 030  0 150 031  0 045 120  1 205 118"
        + "  0 080 180  0 170 182\r\n"
    ),
}

# ----------------------------------------------------------------------------------- consumer-to-shop files

C2S = {
    "Eval/list_eval_partition.txt": """3
image_pair_name_1  image_pair_name_2  item_id  evaluation_status
img/TOPS/Summer_Wear/id_00000001/comsumer_01.jpg    img/TOPS/Summer_Wear/id_00000001/shop_01.jpg   id_00000001  train
img/TOPS/Summer_Wear/id_00000001/comsumer_02.jpg    img/TOPS/Summer_Wear/id_00000001/shop_01.jpg   id_00000001  val
img/CLOTHING/Dress/id_00000002/comsumer_01.jpg      img/CLOTHING/Dress/id_00000002/shop_01.jpg     id_00000002  test
""",
    "Anno/list_bbox_consumer2shop.txt": """3
image_name  clothes_type  source_type  x_1  y_1  x_2  y_2
img/TOPS/Summer_Wear/id_00000001/comsumer_01.jpg    1  2  010  020  180  230
img/TOPS/Summer_Wear/id_00000001/shop_01.jpg        1  1  030  015  200  260
img/CLOTHING/Dress/id_00000002/shop_01.jpg          3  1  025  010  190  290
""",
    "Anno/list_landmarks_consumer2shop.txt": f"""2
{LANDMARK_HEADER}
img/TOPS/Summer_Wear/id_00000001/comsumer_01.jpg  1  1  0 050 040  0 120 041  2 020 110  0 150 112  0 060 220  1 130 221
img/CLOTHING/Dress/id_00000002/shop_01.jpg        3  1  0 070 030  0 140 031  0 050 090  0 160 091  0 075 150  0 135 151  0 060 280  0 150 281
""",  # noqa: E501 - a landmark line is long in the real files too
}

# ------------------------------------------------------------------------------ category / attribute files

ATTRIBUTES = {
    "Eval/list_eval_partition.txt": """3
image_name  evaluation_status
img/Sheer_Pleated-Front_Blouse/img_00000001.jpg                        train
img/Denim_Cutoffs/img_00000002.jpg                                     val
img/Floral_Romper/img_00000003.jpg                                     test
""",
    "Anno/list_category_cloth.txt": """3
category_name  category_type
Blouse                       1
Cutoffs                      2
Romper                       3
""",
    "Anno/list_category_img.txt": """3
image_name  category_label
img/Sheer_Pleated-Front_Blouse/img_00000001.jpg                        1
img/Denim_Cutoffs/img_00000002.jpg                                     2
img/Floral_Romper/img_00000003.jpg                                     3
""",
    "Anno/list_attr_cloth.txt": """5
attribute_name  attribute_type
a-line                       3
abstract print               1
cotton                       2
v-neck                       4
boho chic                    5
""",
    "Anno/list_attr_img.txt": """3
image_name  attribute_labels
img/Sheer_Pleated-Front_Blouse/img_00000001.jpg                        -1 -1  1 -1 -1
img/Denim_Cutoffs/img_00000002.jpg                                      1 -1 -1 -1  0
img/Floral_Romper/img_00000003.jpg                                     -1  1  1 -1  1
""",
    "Anno/list_bbox.txt": """2
image_name  x_1  y_1  x_2  y_2
img/Sheer_Pleated-Front_Blouse/img_00000001.jpg                        072 079 232 273
img/Denim_Cutoffs/img_00000002.jpg                                     067 059 155 161
""",
    "Anno/list_landmarks.txt": f"""2
{LANDMARK_HEADER}
img/Sheer_Pleated-Front_Blouse/img_00000001.jpg  1  0  1 146 102  0 173 095  0 094 242  0 205 255  0 136 229  0 177 232
img/Denim_Cutoffs/img_00000002.jpg               2  0  0 080 070  0 140 071  2 078 150  0 145 152
""",
}

# ------------------------------------------------------------------------------ landmark-detection files

LANDMARKS = {
    "Eval/list_eval_partition.txt": """4
image_name  evaluation_status
img/img_00000001.jpg   train
img/img_00000002.jpg   val
img/img_00000003.jpg   test
img/img_00000004.jpg   train
""",
    # Every line has 8 triples (unused ones 0 0 0) except the last, which is accepted with its own 6.
    "Anno/list_landmarks.txt": f"""4
{LANDMARK_HEADER}
img/img_00000001.jpg  2  0  0 081 120  1 160 122  0 075 250  2 170 255  0 000 000  0 000 000  0 000 000  0 000 000
img/img_00000002.jpg  1  0  0 050 040  0 120 041  2 020 110  0 150 112  0 060 220  1 130 221  0 000 000  0 000 000
img/img_00000003.jpg  3  1  0 070 030  0 140 031  0 050 090  0 160 091  0 075 150  0 135 151  0 060 280  0 150 281
img/img_00000004.jpg  1  0  0 010 011  0 012 013  0 014 015  0 016 017  0 018 019  0 020 021
""",  # noqa: E501
    "Anno/list_bbox.txt": """3
image_name  x_1  y_1  x_2  y_2
img/img_00000001.jpg   040  030  210  290
img/img_00000002.jpg   005  006  180  250
img/img_00000003.jpg   010  011  220  300
""",
}

FOLDERS = {"inshop": INSHOP, "consumer2shop": C2S, "attributes": ATTRIBUTES, "landmarks": LANDMARKS}
LOADERS: dict[str, Callable[[Path], Benchmark]] = {
    "inshop": load_inshop,
    "consumer2shop": load_consumer2shop,
    "attributes": load_attributes,
    "landmarks": load_landmarks,
}


def write_folder(root: Path, files: dict[str, str]) -> Path:
    """Write files byte for byte (no newline translation, so the CRLF file stays CRLF)."""
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text.encode("utf-8"))
    return root


def by_image(benchmark: Benchmark) -> dict[str, ImageRecord]:
    return {record.image: record for record in benchmark.records}


def assert_slots(record: ImageRecord, expected: dict[int, tuple[int, float, float]]) -> None:
    """``expected`` maps canonical slot -> (visibility, x, y); every other slot must be absent at 0, 0."""
    assert record.landmarks is not None and record.visibility is not None
    assert record.landmarks.shape == (8, 2) and record.landmarks.dtype == np.float32
    assert record.visibility.shape == (8,) and record.visibility.dtype == np.int64
    for slot in range(8):
        vis, x, y = expected.get(slot, (VIS_ABSENT, 0.0, 0.0))
        assert record.visibility[slot] == vis, f"slot {slot}"
        assert tuple(record.landmarks[slot]) == (x, y), f"slot {slot}"


# ------------------------------------------------------------------------------------------ valid folders


def test_inshop_records_bbox_landmarks_and_splits(tmp_path: Path) -> None:
    bench = load_inshop(write_folder(tmp_path, INSHOP))
    assert bench.name == "inshop" and bench.root == tmp_path
    assert [r.image for r in bench.records] == [
        line.split()[0] for line in INSHOP["Eval/list_eval_partition.txt"].splitlines()[2:]
    ]
    records = by_image(bench)
    dress = records["img/WOMEN/Dresses/id_00000002/02_1_front.jpg"]
    assert (dress.split, dress.item_id, dress.domain) == ("train", "id_00000002", "shop")
    assert dress.clothes_type is ClothesType.FULL and dress.bbox == (50, 49, 208, 235)
    assert_slots(
        dress,
        {
            0: (0, 92, 66),
            1: (0, 160, 64),
            2: (1, 80, 120),
            3: (0, 175, 118),
            4: (0, 100, 140),
            5: (2, 161, 141),
            6: (0, 70, 230),
            7: (0, 190, 229),
        },
    )
    denim = records["img/MEN/Denim/id_00000080/01_1_front.jpg"]
    assert denim.split == "query" and denim.clothes_type is ClothesType.LOWER
    assert_slots(denim, {4: (0, 90, 82), 5: (0, 165, 80), 6: (1, 85, 250), 7: (2, 172, 251)})
    blouse = records["img/WOMEN/Blouses_Shirts/id_00000001/02_1_front.jpg"]
    assert blouse.split == "gallery" and blouse.clothes_type is ClothesType.UPPER
    assert_slots(
        blouse, {0: (0, 100, 30), 1: (0, 150, 31), 2: (0, 45, 120), 3: (1, 205, 118), 6: (0, 80, 180), 7: (0, 170, 182)}
    )


def test_inshop_image_without_annotations_keeps_none(tmp_path: Path) -> None:
    record = by_image(load_inshop(write_folder(tmp_path, INSHOP)))["img/MEN/Denim/id_00000080/01_2_side.jpg"]
    assert (record.split, record.domain, record.item_id) == ("gallery", "shop", "id_00000080")
    assert record.bbox is None and record.landmarks is None and record.visibility is None
    assert record.clothes_type is None and record.category is None and record.attributes is None


def test_inshop_without_category_files_has_empty_vocabularies(tmp_path: Path) -> None:
    bench = load_inshop(write_folder(tmp_path, INSHOP))
    assert bench.categories == [] and bench.attributes == []
    assert all(r.category is None for r in bench.records)


def test_inshop_item_list_with_header_line_is_accepted(tmp_path: Path) -> None:
    files = dict(INSHOP, **{"Anno/list_item_inshop.txt": "3\nitem_id\nid_00000001\nid_00000002\nid_00000080\n"})
    assert len(load_inshop(write_folder(tmp_path, files)).records) == 5


def test_inshop_loads_optional_category_and_attribute_files(tmp_path: Path) -> None:
    dress, side = "img/WOMEN/Dresses/id_00000002/02_1_front.jpg", "img/MEN/Denim/id_00000080/01_2_side.jpg"
    extra = {
        "Anno/list_category_cloth.txt": ATTRIBUTES["Anno/list_category_cloth.txt"],
        "Anno/list_category_img.txt": f"2\nimage_name  category_label\n{dress}   3\n{side}   2\n",
        "Anno/list_attr_cloth.txt": ATTRIBUTES["Anno/list_attr_cloth.txt"],
        "Anno/list_attr_img.txt": f"1\nimage_name  attribute_labels\n{dress}   1 -1 -1  1  0\n",
    }
    bench = load_inshop(write_folder(tmp_path, {**INSHOP, **extra}))
    records = by_image(bench)
    assert [c.name for c in bench.categories] == ["Blouse", "Cutoffs", "Romper"]
    assert records[dress].category == 2
    assert records[dress].attributes.tolist() == [1, 0, 0, 1, 0]
    # No bbox/landmark line for this image: its clothes type comes from its category.
    assert records[side].category == 1 and records[side].clothes_type is ClothesType.LOWER


def test_consumer2shop_one_record_per_image_and_pairs(tmp_path: Path) -> None:
    bench = load_consumer2shop(write_folder(tmp_path, C2S))
    assert isinstance(bench, PairBenchmark) and bench.name == "consumer2shop"
    top, dress = "img/TOPS/Summer_Wear/id_00000001/", "img/CLOTHING/Dress/id_00000002/"
    assert [(r.image, r.split, r.item_id, r.domain) for r in bench.records] == [
        (top + "comsumer_01.jpg", "train", "id_00000001", "consumer"),
        (top + "shop_01.jpg", "train", "id_00000001", "shop"),  # shared by a val pair: first pair's split wins
        (top + "comsumer_02.jpg", "val", "id_00000001", "consumer"),
        (dress + "comsumer_01.jpg", "test", "id_00000002", "consumer"),
        (dress + "shop_01.jpg", "test", "id_00000002", "shop"),
    ]
    assert bench.pairs == [
        (top + "comsumer_01.jpg", top + "shop_01.jpg", "id_00000001", "train"),
        (top + "comsumer_02.jpg", top + "shop_01.jpg", "id_00000001", "val"),
        (dress + "comsumer_01.jpg", dress + "shop_01.jpg", "id_00000002", "test"),
    ]
    records = by_image(bench)
    assert records[top + "comsumer_01.jpg"].bbox == (10, 20, 180, 230)
    assert records[top + "comsumer_02.jpg"].bbox is None
    assert_slots(
        records[top + "comsumer_01.jpg"],
        {0: (0, 50, 40), 1: (0, 120, 41), 2: (2, 20, 110), 3: (0, 150, 112), 6: (0, 60, 220), 7: (1, 130, 221)},
    )
    assert records[dress + "shop_01.jpg"].clothes_type is ClothesType.FULL
    assert bench.categories == [] and records[dress + "shop_01.jpg"].category is None


def test_consumer2shop_source_type_decides_domain(tmp_path: Path) -> None:
    files = dict(C2S)
    files["Anno/list_bbox_consumer2shop.txt"] = files["Anno/list_bbox_consumer2shop.txt"].replace(
        "shop_01.jpg          3  1", "shop_01.jpg          3  2"
    )
    bench = load_consumer2shop(write_folder(tmp_path, files))
    assert by_image(bench)["img/CLOTHING/Dress/id_00000002/shop_01.jpg"].domain == "consumer"


# Consumer-to-shop with the item groupings only: no landmark, category or attribute files.
C2S_ITEMS = "Anno/list_item_consumer2shop.txt"
C2S_GROUPINGS = {
    "Eval/list_eval_partition.txt": C2S["Eval/list_eval_partition.txt"],
    C2S_ITEMS: "2\nitem_id\nid_00000001\nid_00000002\n",
    "Anno/list_bbox_consumer2shop.txt": C2S["Anno/list_bbox_consumer2shop.txt"],
}


def test_consumer2shop_from_item_groupings_only(tmp_path: Path) -> None:
    root = write_folder(tmp_path, C2S_GROUPINGS)
    bench = load_benchmark(root)
    assert isinstance(bench, PairBenchmark) and bench.name == "consumer2shop"
    top, dress = "img/TOPS/Summer_Wear/id_00000001/", "img/CLOTHING/Dress/id_00000002/"
    assert [(r.image, r.split, r.item_id, r.domain) for r in bench.records] == [
        (top + "comsumer_01.jpg", "train", "id_00000001", "consumer"),
        (top + "shop_01.jpg", "train", "id_00000001", "shop"),
        (top + "comsumer_02.jpg", "val", "id_00000001", "consumer"),
        (dress + "comsumer_01.jpg", "test", "id_00000002", "consumer"),
        (dress + "shop_01.jpg", "test", "id_00000002", "shop"),
    ]
    assert len(bench.pairs) == 3 and bench.categories == [] and bench.attributes == []
    assert all(r.landmarks is None and r.category is None and r.attributes is None for r in bench.records)
    assert by_image(bench)[top + "comsumer_01.jpg"].bbox == (10, 20, 180, 230)


@pytest.mark.parametrize("item_list", ["2\nitem_id\nid_00000001\nid_00000002\n", "2\nid_00000001\nid_00000002\n"])
def test_consumer2shop_item_list_alone_is_detected_and_pair_columns_give_domains(
    tmp_path: Path, item_list: str
) -> None:
    files = {"Eval/list_eval_partition.txt": C2S["Eval/list_eval_partition.txt"], C2S_ITEMS: item_list}
    bench = load_benchmark(write_folder(tmp_path, files))
    assert bench.name == "consumer2shop"
    assert [r.domain for r in bench.records] == ["consumer", "shop", "consumer", "consumer", "shop"]
    assert all(r.bbox is None and r.clothes_type is None for r in bench.records)


def test_consumer2shop_pair_item_missing_from_item_list(tmp_path: Path) -> None:
    files = dict(C2S_GROUPINGS, **{C2S_ITEMS: "1\nitem_id\nid_00000001\n"})
    with pytest.raises(DataFormatError) as caught:
        load_consumer2shop(write_folder(tmp_path, files))
    error = caught.value
    assert error.file == str(tmp_path / "Eval/list_eval_partition.txt") and error.line == 5
    assert f"expected an item_id listed in {C2S_ITEMS}, got 'id_00000002'" in str(error)


# ------------------------------------------------------------------------------------------ image files


def write_images(root: Path, images: list[str]) -> None:
    for relative in images:
        (root / relative).parent.mkdir(parents=True, exist_ok=True)
        (root / relative).write_bytes(b"not decoded here")


@pytest.mark.parametrize("folder", ["", "Img"], ids=["img-at-root", "Img-img-unzipped-in-place"])
def test_image_paths_in_either_official_layout(tmp_path: Path, folder: str) -> None:
    bench = load_benchmark(write_folder(tmp_path, C2S_GROUPINGS))
    write_images(tmp_path / folder, [r.image for r in bench.records])
    assert [bench.path(r) for r in bench.records] == [tmp_path / folder / r.image for r in bench.records]


def test_image_paths_are_looked_up_per_record_when_layouts_mix(tmp_path: Path) -> None:
    bench = load_benchmark(write_folder(tmp_path, C2S_GROUPINGS))
    under_img = {r.image for r in bench.records[::2]}
    write_images(tmp_path / "Img", sorted(under_img))
    write_images(tmp_path, [r.image for r in bench.records if r.image not in under_img])
    for record in bench.records:
        assert bench.path(record) == tmp_path / ("Img" if record.image in under_img else "") / record.image


def test_missing_image_names_every_path_tried(tmp_path: Path) -> None:
    bench = load_benchmark(write_folder(tmp_path, C2S_GROUPINGS))
    first, missing = bench.records[0], bench.records[1]
    write_images(tmp_path / "Img", [first.image])
    assert bench.path(first) == tmp_path / "Img" / first.image  # the Img/ layout is now tried first
    with pytest.raises(InvalidInput) as caught:
        bench.path(missing)
    message = str(caught.value)
    assert str(tmp_path / missing.image) in message and str(tmp_path / "Img" / missing.image) in message
    assert f"image {missing.image!r} of the consumer2shop benchmark not found" in message


def test_attributes_benchmark(tmp_path: Path) -> None:
    bench = load_attributes(write_folder(tmp_path, ATTRIBUTES))
    assert bench.name == "attributes"
    assert [(c.name, c.clothes_type) for c in bench.categories] == [
        ("Blouse", ClothesType.UPPER),
        ("Cutoffs", ClothesType.LOWER),
        ("Romper", ClothesType.FULL),
    ]
    assert [(a.name, a.group) for a in bench.attributes] == [
        ("a-line", "shape"),
        ("abstract print", "texture"),
        ("cotton", "fabric"),
        ("v-neck", "part"),
        ("boho chic", "style"),
    ]
    blouse, cutoffs, romper = bench.records
    assert [r.split for r in bench.records] == ["train", "val", "test"]
    assert [r.category for r in bench.records] == [0, 1, 2]
    assert blouse.attributes.dtype == np.uint8
    assert blouse.attributes.tolist() == [0, 0, 1, 0, 0]
    assert cutoffs.attributes.tolist() == [1, 0, 0, 0, 0]  # 0 means unknown, not positive
    assert romper.attributes.tolist() == [0, 1, 1, 0, 1]
    assert blouse.bbox == (72, 79, 232, 273) and romper.bbox is None
    assert_slots(
        blouse,
        {0: (1, 146, 102), 1: (0, 173, 95), 2: (0, 94, 242), 3: (0, 205, 255), 6: (0, 136, 229), 7: (0, 177, 232)},
    )
    assert_slots(cutoffs, {4: (0, 80, 70), 5: (0, 140, 71), 6: (2, 78, 150), 7: (0, 145, 152)})
    # No landmark line: the clothes type comes from the category's type.
    assert romper.landmarks is None and romper.clothes_type is ClothesType.FULL


def test_landmark_benchmark_eight_triples_for_every_clothes_type(tmp_path: Path) -> None:
    bench = load_landmarks(write_folder(tmp_path, LANDMARKS))
    assert bench.name == "landmarks" and bench.categories == [] and bench.attributes == []
    lower, upper, full, upper6 = bench.records
    assert lower.clothes_type is ClothesType.LOWER and lower.split == "train"
    assert_slots(lower, {4: (0, 81, 120), 5: (1, 160, 122), 6: (0, 75, 250), 7: (2, 170, 255)})
    assert_slots(
        upper, {0: (0, 50, 40), 1: (0, 120, 41), 2: (2, 20, 110), 3: (0, 150, 112), 6: (0, 60, 220), 7: (1, 130, 221)}
    )
    assert_slots(
        full,
        {
            0: (0, 70, 30),
            1: (0, 140, 31),
            2: (0, 50, 90),
            3: (0, 160, 91),
            4: (0, 75, 150),
            5: (0, 135, 151),
            6: (0, 60, 280),
            7: (0, 150, 281),
        },
    )
    assert_slots(
        upper6, {0: (0, 10, 11), 1: (0, 12, 13), 2: (0, 14, 15), 3: (0, 16, 17), 6: (0, 18, 19), 7: (0, 20, 21)}
    )
    assert lower.bbox == (40, 30, 210, 290) and upper6.bbox is None


def test_benchmarks_are_the_four_deepfashion_ones_and_the_product_folder() -> None:
    assert (*FOLDERS, "folder") == BENCHMARKS


@pytest.mark.parametrize("name", FOLDERS)
def test_load_benchmark_detects_each_folder(tmp_path: Path, name: str) -> None:
    root = write_folder(tmp_path, FOLDERS[name])
    detected = load_benchmark(root)
    assert detected.name == name
    assert [r.image for r in detected.records] == [r.image for r in LOADERS[name](root).records]
    assert load_benchmark(str(root), name).name == name


def test_inshop_with_category_files_is_still_detected_as_inshop(tmp_path: Path) -> None:
    files = {
        **INSHOP,
        "Anno/list_category_cloth.txt": ATTRIBUTES["Anno/list_category_cloth.txt"],
        "Anno/list_category_img.txt": "0\nimage_name  category_label\n",
    }
    assert load_benchmark(write_folder(tmp_path, files)).name == "inshop"


def test_load_benchmark_without_known_files_lists_what_it_looked_for(tmp_path: Path) -> None:
    write_folder(tmp_path, {"Eval/list_eval_partition.txt": LANDMARKS["Eval/list_eval_partition.txt"]})
    with pytest.raises(DataFormatError) as caught:
        load_benchmark(tmp_path)
    message = str(caught.value)
    for looked_for in (
        "list_item_inshop.txt",
        "list_bbox_consumer2shop.txt",
        "list_attr_img.txt",
        "Anno/list_landmarks.txt",
    ):
        assert looked_for in message


def test_load_benchmark_rejects_unknown_name(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="expected one of inshop, consumer2shop, attributes, landmarks, folder"):
        load_benchmark(write_folder(tmp_path, LANDMARKS), "deepfashion2")


# ---------------------------------------------------------------------------------------- malformed input

# (folder, file, text to replace, replacement, 1-based line of the error, expectation in the message)
BROKEN = [
    pytest.param("landmarks", "Eval/list_eval_partition.txt", "4\n", "5\n", 1, "5 data lines", id="count-too-big"),
    pytest.param(
        "attributes",
        "Anno/list_attr_cloth.txt",
        "5\nattribute_name",
        "five\nattribute_name",
        1,
        "number of data lines",
        id="count-not-a-number",
    ),
    pytest.param(
        "inshop",
        "Anno/list_bbox_inshop.txt",
        "image_name  clothes_type",
        "image  clothes_type",
        2,
        "column names line starting with 'image_name clothes_type pose_type",
        id="bad-header",
    ),
    pytest.param(
        "inshop",
        "Anno/list_bbox_inshop.txt",
        "2  1  072  079  185  256",
        "2  1  072  079  185",
        5,
        "7 columns (image_name clothes_type pose_type x_1 y_1 x_2 y_2)",
        id="missing-column",
    ),
    pytest.param(
        "inshop",
        "Anno/list_bbox_inshop.txt",
        "060  044",
        "060  04x",
        4,
        "an integer bounding-box y_1",
        id="non-numeric-bbox",
    ),
    pytest.param(
        "landmarks",
        "Eval/list_eval_partition.txt",
        "img_00000002.jpg   val",
        "img_00000002.jpg   valid",
        4,
        "evaluation_status train/val/test",
        id="bad-split",
    ),
    pytest.param(
        "inshop",
        "Eval/list_eval_partition.txt",
        "id_00000080           query",
        "id_00000080           test",
        5,
        "evaluation_status train/query/gallery",
        id="bad-inshop-split",
    ),
    pytest.param(
        "landmarks",
        "Eval/list_eval_partition.txt",
        "img_00000004.jpg",
        "img_00000003.jpg",
        6,
        "each image listed once",
        id="duplicate-image",
    ),
    pytest.param(
        "landmarks",
        "Eval/list_eval_partition.txt",
        "img_00000002.jpg   val\n",
        "img_00000002.jpg   val\n\n",
        5,
        "no empty lines between entries",
        id="empty-line-inside",
    ),
    pytest.param(
        "inshop",
        "Eval/list_eval_partition.txt",
        "id_00000080           gallery",
        "id_00000081           gallery",
        6,
        "an item_id listed in Anno/list_item_inshop.txt",
        id="unknown-item",
    ),
    pytest.param(
        "inshop",
        "Anno/list_landmarks_inshop.txt",
        "01_1_front.jpg             2  1",
        "01_1_front.jpg             4  1",
        5,
        "clothes_type 1 (upper), 2 (lower) or 3 (full body)",
        id="unknown-clothes-type",
    ),
    pytest.param(
        "inshop",
        "Anno/list_landmarks_inshop.txt",
        "02_2_side.jpg          3  2",
        "02_2_side.jpg          1  2",
        4,
        "6 landmark triples (18 numbers) for clothes_type 1",
        id="triples-vs-clothes-type",
    ),
    pytest.param(
        "attributes",
        "Anno/list_landmarks.txt",
        "0 145 152\n",
        "0 145\n",
        4,
        "4 landmark triples (12 numbers) for clothes_type 2",
        id="missing-landmark-number",
    ),
    pytest.param(
        "landmarks",
        "Anno/list_landmarks.txt",
        "img/img_00000004.jpg  1  0",
        "img/img_00000004.jpg  2  0",
        6,
        "4 landmark triples (12 numbers) for clothes_type 2 or 8 triples (24 numbers)",
        id="lower-with-6",
    ),
    pytest.param(
        "attributes",
        "Anno/list_landmarks.txt",
        "1 146 102",
        "3 146 102",
        3,
        "a visibility code 0, 1 or 2",
        id="bad-visibility",
    ),
    pytest.param(
        "inshop",
        "Anno/list_landmarks_inshop.txt",
        "1 205 118",
        "1 205 abc",
        6,
        "numeric landmark visibility and x, y values",
        id="non-numeric-landmark",
    ),
    pytest.param(
        "attributes",
        "Anno/list_category_img.txt",
        "img_00000002.jpg                                     2",
        "img_00000002.jpg                                     4",
        4,
        "an integer category label between 1 and 3",
        id="category-label-too-big",
    ),
    pytest.param(
        "attributes",
        "Anno/list_category_img.txt",
        "img_00000003.jpg                                     3",
        "img_00000003.jpg                                     0",
        5,
        "an integer category label between 1 and 3",
        id="category-label-zero",
    ),
    pytest.param(
        "attributes",
        "Anno/list_category_cloth.txt",
        "Romper                       3",
        "Romper                       4",
        5,
        "category_type 1 (upper), 2 (lower) or 3 (full)",
        id="bad-category-type",
    ),
    pytest.param(
        "attributes",
        "Anno/list_attr_cloth.txt",
        "boho chic                    5",
        "boho chic                    6",
        7,
        "attribute_type 1..5",
        id="bad-attribute-type",
    ),
    pytest.param(
        "attributes",
        "Anno/list_attr_img.txt",
        "1 -1 -1 -1  0",
        "1 -1 -1 -1",
        4,
        "5 attribute values after the image name",
        id="too-few-attribute-values",
    ),
    pytest.param(
        "attributes",
        "Anno/list_attr_img.txt",
        "-1  1  1 -1  1",
        "-1  1  2 -1  1",
        5,
        "attribute values -1, 0 or 1",
        id="attribute-value-2",
    ),
    pytest.param(
        "attributes",
        "Anno/list_attr_img.txt",
        "-1  1  1 -1  1",
        "-1  1  y -1  1",
        5,
        "attribute values -1, 0 or 1",
        id="attribute-value-not-a-number",
    ),
    pytest.param(
        "attributes",
        "Anno/list_bbox.txt",
        "img/Denim_Cutoffs/img_00000002.jpg",
        "img/Denim_Cutoffs/img_00000099.jpg",
        4,
        "an image listed in Eval/list_eval_partition.txt",
        id="image-not-in-partition",
    ),
    pytest.param(
        "consumer2shop",
        "Anno/list_bbox_consumer2shop.txt",
        "shop_01.jpg        1  1",
        "shop_01.jpg        1  3",
        4,
        "source_type 1 (shop) or 2 (consumer)",
        id="bad-source-type",
    ),
    pytest.param(
        "consumer2shop",
        "Eval/list_eval_partition.txt",
        "id_00000002  test",
        "test",
        5,
        "4 columns (image_pair_name_1 image_pair_name_2 item_id evaluation_status)",
        id="pair-missing-column",
    ),
]


@pytest.mark.parametrize(("folder", "relative", "old", "new", "line", "expected"), BROKEN)
def test_malformed_line_names_file_line_and_expectation(
    tmp_path: Path, folder: str, relative: str, old: str, new: str, line: int, expected: str
) -> None:
    files = dict(FOLDERS[folder])
    assert files[relative].count(old) == 1, "the case must break exactly one place"
    files[relative] = files[relative].replace(old, new)
    with pytest.raises(DataFormatError) as caught:
        LOADERS[folder](write_folder(tmp_path, files))
    error = caught.value
    assert error.file == str(tmp_path / relative) and error.line == line
    assert f"{relative}:{line}: expected " in str(error)
    assert expected in str(error)


def test_count_line_smaller_than_data_lines(tmp_path: Path) -> None:
    files = dict(
        C2S, **{"Anno/list_bbox_consumer2shop.txt": C2S["Anno/list_bbox_consumer2shop.txt"].replace("3\n", "2\n", 1)}
    )
    with pytest.raises(DataFormatError) as caught:
        load_consumer2shop(write_folder(tmp_path, files))
    assert "list_bbox_consumer2shop.txt:1: expected 2 data lines" in str(caught.value)
    assert "3 data lines" in str(caught.value)


@pytest.mark.parametrize(
    ("folder", "missing"),
    [
        ("attributes", "Anno/list_attr_img.txt"),
        ("attributes", "Anno/list_category_cloth.txt"),
        ("landmarks", "Anno/list_landmarks.txt"),
        ("inshop", "Eval/list_eval_partition.txt"),
        ("consumer2shop", "Eval/list_eval_partition.txt"),
    ],
)
def test_missing_required_file_names_file_and_benchmark(tmp_path: Path, folder: str, missing: str) -> None:
    files = {k: v for k, v in FOLDERS[folder].items() if k != missing}
    with pytest.raises(DataFormatError) as caught:
        LOADERS[folder](write_folder(tmp_path, files))
    assert missing in str(caught.value) and f"the {folder} benchmark needs" in str(caught.value)
    assert caught.value.line is None


def test_half_of_an_optional_vocabulary_pair_is_an_error(tmp_path: Path) -> None:
    files = {**INSHOP, "Anno/list_attr_cloth.txt": ATTRIBUTES["Anno/list_attr_cloth.txt"]}
    with pytest.raises(DataFormatError, match="Anno/list_attr_img.txt, which the inshop benchmark needs"):
        load_inshop(write_folder(tmp_path, files))


def test_conflicting_item_ids_for_one_image(tmp_path: Path) -> None:
    files = dict(C2S)
    files["Eval/list_eval_partition.txt"] = files["Eval/list_eval_partition.txt"].replace(
        "id_00000001  val", "id_00000009  val"
    )
    with pytest.raises(DataFormatError) as caught:
        load_consumer2shop(write_folder(tmp_path, files))
    assert "list_eval_partition.txt:4: expected item_id id_00000001" in str(caught.value)
