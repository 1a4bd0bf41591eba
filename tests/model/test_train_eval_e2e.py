"""A tiny end-to-end run: synthesise -> train (landmarks, then all tasks) -> resume -> evaluate."""

from __future__ import annotations

import json
import math

import pytest

from shared.data.synth import generate
from shared.fashionnet import load_checkpoint
from shared.fashionnet.checkpoint import read_checkpoint
from shared.training.evaluate import IMAGENET, evaluate, write_json
from shared.training.train import TrainConfig, train

# Per-group attribute keys appear only for groups with positives in the (tiny) test split, so the fixed
# list names the pooled "all" group; every per-group key that is present is range-checked below.
PAPER_KEYS = ("category.top3", "category.top5", "attributes.all.top3", "attributes.all.top5", "landmarks.ne",
              "retrieval.top1", "retrieval.top20")


@pytest.fixture(scope="module")
def c2s(tmp_path_factory):
    root = tmp_path_factory.mktemp("synth") / "c2s"
    generate("consumer2shop", root, 16, seed=3, image_size=96, workers=1, progress=False)
    return root


def _config(c2s, out, **kw) -> TrainConfig:
    return TrainConfig(data=c2s, out=out, benchmark="consumer2shop", input_size=64, embedding_dim=32, views=2,
                       items_per_batch=4, images_per_item=2, max_steps_per_epoch=2, workers=0, finetune_epochs=0,
                       cache_dir=out.parent / "cache", **kw)


def test_train_resume_then_evaluate(c2s, tmp_path) -> None:
    run = tmp_path / "run"
    # First invocation: only the paper's first stage (landmarks + visibility).
    train(_config(c2s, run, landmark_epochs=1, epochs=0), progress=False)
    first = read_checkpoint(run / "last.pt")
    assert first["epoch"] == 1 and [h["stage"] for h in first["history"]] == ["landmarks"]

    # Second invocation with the same run folder resumes after that epoch instead of starting over.
    path = train(_config(c2s, run, landmark_epochs=1, epochs=1), progress=False)
    model, meta = load_checkpoint(path)
    stages = [h["stage"] for h in meta.notes["history"]]
    assert stages == ["landmarks", "all"]
    assert {"metric", "category", "attributes"} <= set(meta.notes["history"][1])
    assert meta.input_size == 64 and meta.embedding_dim == 32 and len(meta.categories) >= 8

    result = evaluate("consumer2shop", c2s, path, progress=False)
    out = tmp_path / "metrics.json"
    write_json(result, out)
    flat = json.loads(out.read_text())
    for key in PAPER_KEYS:
        assert key in flat, key
    for key, value in flat.items():
        if key.startswith(("category.", "attributes.", "retrieval.top")):
            assert 0.0 <= value <= 1.0, (key, value)
    assert flat["landmarks.ne"] >= 0
    assert any(k.startswith("attributes.") and not k.startswith("attributes.all") for k in flat)
    assert flat["retrieval.queries"] > 0


def test_imagenet_baseline_has_only_retrieval(c2s) -> None:
    result = evaluate("consumer2shop", c2s, IMAGENET, input_size=64, progress=False)
    assert set(result) >= {"retrieval"} and "category" not in result
    assert not math.isnan(result["retrieval"]["top20"])
