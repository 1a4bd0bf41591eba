"""The garment detector inside FashionNet: its maps in the forward output, in the ONNX export, and one short
`fashion train` + `fashion eval` round on a few synthetic outfits (tiny model, 64 px)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from PIL import Image

from shared.data.outfits import load_outfits
from shared.data.synth import generate
from shared.detection.decode import decode_maps
from shared.detection.head import MAP_CHANNELS
from shared.errors import InvalidInput
from shared.fashionnet import create_model
from shared.fashionnet.checkpoint import load_checkpoint
from shared.fashionnet.inference import EagerEngine, OnnxEngine, max_abs_diff, tolerance_violations
from shared.serving.runtime import LoadedModel
from shared.training.detector import DetectorConfig, train_outfits
from shared.training.garment_pairs import write_garment_pairs
from shared.training.outfit_eval import evaluate_outfits

SIZE = 64


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return create_model("fashionnet_efficientnet_lite0", pretrained=False, num_categories=5, num_attributes=7,
                        embedding_dim=16, detector=True).eval()


def test_forward_returns_garment_maps_at_stride_16() -> None:
    model = _model()
    x = torch.randn(2, 3, SIZE, SIZE)
    out = model(x)
    assert out.garment_maps.shape == (2, MAP_CHANNELS, SIZE // 16, SIZE // 16)
    assert torch.isfinite(out.garment_maps).all()
    mid, top = model.backbone(x)
    assert model.forward_trunk(mid, top.mean(dim=(2, 3))).garment_maps is None  # the cached path skips it


def test_onnx_export_carries_the_detector(tmp_path: Path) -> None:
    model = _model()
    engine = OnnxEngine.from_model(model, input_size=SIZE, cache_dir=tmp_path, exporter="dynamo")
    assert "garment_maps" in engine.output_names
    x = torch.randn(3, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(1))
    out, ref = engine.run(x), EagerEngine(model).run(x)
    diffs = max_abs_diff(out, ref)
    assert "garment_maps" in diffs and not tolerance_violations(diffs), diffs
    for a, b in zip(out.garment_maps.numpy(), ref.garment_maps.numpy(), strict=True):
        assert [d.garment_class for d in decode_maps(a, threshold=0.0)] == \
            [d.garment_class for d in decode_maps(b, threshold=0.0)]


def test_train_and_eval_on_outfits(tiny_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "outfits"
    generate("outfits", data, 24, seed=3, image_size=96, workers=1, progress=False)
    path = train_outfits(data, tmp_path / "run", init_checkpoint=tiny_checkpoint, cache_dir=tmp_path / "cache",
                         config=DetectorConfig(epochs=3, batch_size=8, garment_embedding=False), progress=False)
    model, meta = load_checkpoint(path)
    assert meta.detector and meta.parent_version == "tiny-1" and model.garment_head is not None
    history = meta.notes["detector"]["history"]
    assert len(history) == 3 and all(math.isfinite(h["detection"]) for h in history)
    assert history[-1]["detection"] < history[0]["detection"]
    tiny, _ = load_checkpoint(tiny_checkpoint)  # every other head is the init checkpoint's
    assert torch.equal(model.embedding_head.weight, tiny.embedding_head.weight)
    result = evaluate_outfits(data, path, progress=False)
    assert 0.0 <= result["detection"]["ap50"] <= 1.0
    retrieval = result["retrieval"]
    for key in ("top1", "top20", "top20_gt_boxes", "detected_share"):
        assert 0.0 <= retrieval[key] <= 1.0
        assert 0.0 <= retrieval["served"].get(key, 0.0) <= 1.0
    assert retrieval["queries"] > 0
    # A lower serving threshold (FASHION_GARMENT_THRESHOLD) matches at least as many garments, with more boxes.
    low = evaluate_outfits(data, path, threshold=0.05, progress=False)["retrieval"]["served"]
    assert low["garment_threshold"] == 0.05 and retrieval["served"]["garment_threshold"] == 0.3
    assert low["detected_share"] >= retrieval["served"]["detected_share"]
    assert low["detections_per_photo"] >= retrieval["served"]["detections_per_photo"]
    # Serving decodes at the threshold it was given, and only there.
    photos = [Image.open(p).convert("RGB") for p in sorted((data / "test" / "image").glob("*.jpg"))[:6]]
    for threshold in (0.05, 0.3):
        found = LoadedModel.from_checkpoint(path, engine="eager", garment_threshold=threshold).analyze(photos)
        assert all(g.score >= threshold for a in found for g in a.garments)
        counts = [len(a.garments) for a in found]
        if threshold == 0.05:
            low_counts = counts
    assert sum(low_counts) >= sum(counts)


def test_eval_refuses_a_checkpoint_without_a_detector(tiny_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "outfits"
    generate("outfits", data, 8, seed=4, image_size=64, workers=1, progress=False)
    with pytest.raises(Exception, match="expected a checkpoint with a garment detector"):
        evaluate_outfits(data, tiny_checkpoint, progress=False)


def test_train_then_fine_tune_the_embedding_on_garment_crops(tiny_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "outfits"
    generate("outfits", data, 24, seed=3, image_size=96, workers=1, progress=False)
    run = tmp_path / "run"
    path = train_outfits(data, run, init_checkpoint=tiny_checkpoint, cache_dir=tmp_path / "cache",
                         config=DetectorConfig(epochs=2, batch_size=8),
                         embedding={"views": 1, "epochs": 2, "finetune_epochs": 1, "items_per_batch": 4,
                                    "images_per_item": 2, "max_steps_per_epoch": 2}, progress=False)
    pairs = (run / "garment-pairs" / "Eval" / "list_eval_partition.txt").read_text().splitlines()
    assert int(pairs[0]) == len(pairs) - 2 > 0
    assert all((run / "garment-pairs" / name).is_file() for line in pairs[2:] for name in line.split()[:2])
    model, meta = load_checkpoint(path)
    detector, detector_meta = load_checkpoint(run / "detector.pt")
    tiny, _ = load_checkpoint(tiny_checkpoint)
    assert meta.detector and meta.parent_version == "tiny-1" and meta.version == detector_meta.version
    assert set(meta.notes) == {"detector", "garment_embedding"}
    assert meta.notes["garment_embedding"]["benchmark"] == "consumer2shop"
    # The detector is the first part's; the embedding moved from the init checkpoint's.
    for name, tensor in detector.garment_head.state_dict().items():
        assert torch.equal(model.garment_head.state_dict()[name], tensor), name
    assert not torch.equal(model.embedding_head.weight, tiny.embedding_head.weight)
    assert not (run / "garment-embedding" / "model.pt").exists()  # model.pt holds it; last.pt stays to resume
    result = evaluate_outfits(data, path, progress=False)
    assert 0.0 <= result["retrieval"]["top20_gt_boxes"] <= 1.0
    # A rerun in the same directory trains the detector again (here with another seed) and resumes the
    # fine-tuning from last.pt, which holds the first run's head: model.pt still carries this run's detector.
    first_head = {k: v.clone() for k, v in detector.garment_head.state_dict().items()}
    path = train_outfits(data, run, init_checkpoint=tiny_checkpoint, cache_dir=tmp_path / "cache",
                         config=DetectorConfig(epochs=2, batch_size=8, seed=5),
                         embedding={"views": 1, "epochs": 2, "finetune_epochs": 1, "items_per_batch": 4,
                                    "images_per_item": 2, "max_steps_per_epoch": 2}, progress=False)
    rerun, _ = load_checkpoint(path)
    redone, _ = load_checkpoint(run / "detector.pt")
    assert any(not torch.equal(first_head[k], v) for k, v in redone.garment_head.state_dict().items())
    for name, tensor in redone.garment_head.state_dict().items():
        assert torch.equal(rerun.garment_head.state_dict()[name], tensor), name


def test_garment_pairs_refuse_a_split_without_pairs(tmp_path: Path) -> None:
    data = tmp_path / "outfits"
    generate("outfits", data, 8, seed=4, image_size=64, workers=1, progress=False)
    with pytest.raises(InvalidInput, match="expected garments in the nosuch split"):
        write_garment_pairs(load_outfits(data), tmp_path / "pairs", split="nosuch", progress=False)


def test_outfits_the_embedding_cannot_learn_from_still_give_a_detector(tiny_checkpoint, tmp_path: Path) -> None:
    data = tmp_path / "outfits"
    generate("outfits", data, 8, seed=4, image_size=64, workers=1, progress=False)
    # 8 items cannot fill the default 32 items a batch: the detector is kept, the embedding stays the init's.
    path = train_outfits(data, tmp_path / "run", init_checkpoint=tiny_checkpoint, cache_dir=tmp_path / "cache",
                         config=DetectorConfig(epochs=1, batch_size=8), progress=False)
    model, meta = load_checkpoint(path)
    assert model.garment_head is not None and meta.notes["garment_embedding"].startswith("skipped: expected")
    tiny, _ = load_checkpoint(tiny_checkpoint)
    assert torch.equal(model.embedding_head.weight, tiny.embedding_head.weight)
