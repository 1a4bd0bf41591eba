"""The garment detector's pure parts: target encoding, peak decoding, average precision, box framing."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from shared.config import ModelSettings
from shared.detection.crop import QUERY_FILL, garment_crop, square_crop
from shared.detection.decode import DEFAULT_THRESHOLD, decode_maps
from shared.detection.head import MAP_CHANNELS, NUM_CLASSES
from shared.detection.metrics import average_precision, iou
from shared.detection.targets import encode
from shared.vocabulary import GARMENT_CLASSES


def _logit(p: np.ndarray) -> np.ndarray:
    p = np.clip(p, 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p))


def test_encoded_targets_decode_back_to_the_boxes() -> None:
    boxes = [(0.1, 0.05, 0.55, 0.5), (0.3, 0.45, 0.7, 0.98), (0.08, 0.02, 0.62, 0.56)]
    classes = [GARMENT_CLASSES.index(c) for c in ("upper", "lower", "outer")]
    heat, index, reg, mask = encode(boxes, classes, 14, 14)
    assert heat.shape == (NUM_CLASSES, 14, 14) and mask.sum() == 3
    maps = np.zeros((MAP_CHANNELS, 14, 14), np.float32)
    maps[:NUM_CLASSES] = _logit(heat)
    for k in range(3):
        y, x = divmod(int(index[k]), 14)
        maps[NUM_CLASSES:NUM_CLASSES + 2, y, x] = reg[k, :2]
        maps[NUM_CLASSES + 2:, y, x] = _logit(reg[k, 2:])
    found = decode_maps(maps, threshold=0.5)
    assert sorted(d.garment_class for d in found) == ["lower", "outer", "upper"]
    for d in found:
        truth = boxes[classes.index(GARMENT_CLASSES.index(d.garment_class))]
        assert iou(d.box, truth) > 0.98
        assert d.score == pytest.approx(1.0, abs=1e-4)


def test_quiet_maps_give_no_garments() -> None:
    maps = np.full((MAP_CHANNELS, 14, 14), -5.0, np.float32)
    assert decode_maps(maps) == []


def test_average_precision_ranks_by_score() -> None:
    truth = [[(0, 0, 10, 10)], [(0, 0, 10, 10)]]
    perfect = [[((0, 0, 10, 10), 0.9)], [((1, 0, 10, 10), 0.8)]]
    assert average_precision(perfect, truth) == pytest.approx(1.0)
    # A confident false positive ahead of both hits: precision 1/2 then 2/3 at recall 0.5 and 1.
    noisy = [[((0, 0, 10, 10), 0.9), ((50, 50, 60, 60), 0.95)], [((0, 0, 10, 10), 0.8)]]
    assert average_precision(noisy, truth) == pytest.approx(0.5 * 2 / 3 + 0.5 * 2 / 3)
    # A duplicate of a found garment is a false positive, not a second hit.
    assert average_precision([[((0, 0, 10, 10), 0.9), ((0, 0, 10, 10), 0.8)]], [[(0, 0, 10, 10)]]) == 1.0
    assert math.isnan(average_precision([[]], [[]]))
    assert average_precision([[]], [[(0, 0, 1, 1)]]) == 0.0


def test_square_crop_frames_the_box_like_a_shop_photo() -> None:
    image = Image.new("RGB", (100, 80), (255, 0, 0))
    crop = square_crop(image, (70, 10, 100, 70), fill=0.75)
    assert crop.size == (80, 80)  # the longer side (60) takes 75 %
    pixels = np.asarray(crop)
    assert (pixels[40, 5] == (255, 0, 0)).all()  # inside the photo
    assert (pixels[40, 75] == (128, 128, 128)).all()  # beyond its right edge: grey


def _photo_with_box(size: tuple[int, int], box: tuple[int, int, int, int]) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    image.paste((255, 0, 0), box)
    return image


@pytest.mark.parametrize("box", [(50, 40, 110, 120), (0, 0, 40, 90), (150, 100, 200, 160), (10, 70, 190, 90)])
def test_garment_crop_is_square_and_keeps_the_whole_box_with_a_margin(box: tuple[int, int, int, int]) -> None:
    image = _photo_with_box((200, 160), box)
    crop = garment_crop(image, box)
    side = max(box[2] - box[0], box[3] - box[1]) / QUERY_FILL
    assert crop.width == crop.height == round(side)
    red = np.all(np.asarray(crop) == (255, 0, 0), axis=-1)
    assert red.sum() == (box[2] - box[0]) * (box[3] - box[1])  # the whole box, nothing cut
    ys, xs = np.nonzero(red)
    margin = math.floor((side - max(box[2] - box[0], box[3] - box[1])) / 2)
    assert min(ys.min(), xs.min(), crop.height - 1 - ys.max(), crop.width - 1 - xs.max()) >= margin - 1
    assert (xs.min() + xs.max()) / 2 == pytest.approx(crop.width / 2, abs=1.0)  # centred
    assert (ys.min() + ys.max()) / 2 == pytest.approx(crop.height / 2, abs=1.0)


def test_garment_crop_fills_beyond_the_photo_with_grey() -> None:
    crop = garment_crop(_photo_with_box((200, 160), (0, 0, 40, 90)), (0, 0, 40, 90))
    assert (np.asarray(crop)[0, 0] == (128, 128, 128)).all()  # above and left of the photo



def test_serving_and_evaluation_share_one_default_garment_threshold(monkeypatch) -> None:
    monkeypatch.delenv("FASHION_GARMENT_THRESHOLD", raising=False)
    assert ModelSettings().garment_threshold == DEFAULT_THRESHOLD


def test_deepfashion2_rule_picks_each_garments_best_scoring_same_class_detection() -> None:
    from types import SimpleNamespace

    from shared.detection.decode import Detection
    from shared.training.outfit_eval import deepfashion2_queries

    image = Image.new("RGB", (100, 100))
    top = SimpleNamespace(box=(10.0, 10.0, 50.0, 50.0), garment_class="upper")
    skirt = SimpleNamespace(box=(10.0, 55.0, 50.0, 95.0), garment_class="lower")
    photo = SimpleNamespace(garments=[top, skirt])
    weak = Detection((0.1, 0.1, 0.5, 0.5), "upper", 0.2)
    strong_loose = Detection((0.05, 0.05, 0.55, 0.45), "upper", 0.6)  # the top's, however loose: no IoU floor
    wrong_class = Detection((0.1, 0.55, 0.5, 0.95), "full", 0.9)  # the skirt's box, another class: never its query
    assert deepfashion2_queries(photo, image, [weak, strong_loose, wrong_class]) == [strong_loose, None]
    skirt_box = Detection((0.1, 0.56, 0.5, 0.94), "lower", 0.1)  # any score the decoder gave counts
    assert deepfashion2_queries(photo, image, [wrong_class, skirt_box]) == [None, skirt_box]
    assert deepfashion2_queries(SimpleNamespace(garments=[]), image, [weak]) == []


def test_outfit_reports_show_no_single_garment_paper_figures() -> None:
    from rich.console import Console

    from shared.training.evaluate import PAPER, print_report

    def report(benchmark: str) -> str:
        console = Console(record=True, width=200)
        print_report({"benchmark": benchmark, "images": 3, "checkpoint": "ckpt", "retrieval": {"top20": 0.5}},
                     console)
        return console.export_text()

    paper = f"{PAPER['retrieval.top20']:.4f}"
    assert paper in report("consumer2shop")
    assert paper not in report("outfits")
