"""The cached-feature trainer: cache invalidation, learning, item groupings only, resume after SIGKILL."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from shared.data.deepfashion import load_benchmark
from shared.data.synth import generate
from shared.errors import InvalidInput
from shared.fashionnet.checkpoint import load_checkpoint, read_checkpoint
from shared.fashionnet.registry import create_model
from shared.training import metrics
from shared.training.evaluate import predict
from shared.training.train import TrainConfig, train
from shared.training.trunk_cache import TrunkCache, build_cache, cache_key

SIZE = 64


@pytest.fixture(scope="module")
def c2s(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("synth") / "c2s"
    generate("consumer2shop", root, 24, seed=5, image_size=96, workers=1, progress=False)
    return root


def _config(data: Path, out: Path, **kw) -> TrainConfig:
    base = dict(data=data, out=out, input_size=SIZE, embedding_dim=32, views=2, items_per_batch=6,
                images_per_item=2, landmark_epochs=1, epochs=4, finetune_epochs=0, workers=0,
                cache_dir=out.parent / "cache")
    return TrainConfig(**{**base, **kw})


def _backbone():
    return create_model("fashionnet_efficientnet_lite0", num_categories=2, num_attributes=2).backbone


def _build(bench, records, backbone, cache, views=1, size=SIZE):
    return build_cache(bench, records, backbone, cache=cache, views=views, input_size=size,
                       mean=(0.5,) * 3, std=(0.5,) * 3, workers=0, progress=False)


def test_cache_hits_and_is_invalidated_by_weights_size_and_image_bytes(c2s, tmp_path) -> None:
    bench = load_benchmark(c2s)
    records = bench.records[:4]
    backbone = _backbone()
    key = cache_key(backbone, "efficientnet_lite0", SIZE, 1)
    first = TrunkCache(tmp_path, key)
    entries, _ = _build(bench, records, backbone, first)
    assert (first.stats.hits, first.stats.misses) == (0, 4)
    again = TrunkCache(tmp_path, key)
    cached, _ = _build(bench, records, backbone, again)
    assert (again.stats.hits, again.stats.misses) == (4, 0)
    np.testing.assert_array_equal(cached[0].mid, entries[0].mid)

    assert cache_key(backbone, "efficientnet_lite0", SIZE + 32, 1) != key  # input size
    assert cache_key(backbone, "efficientnet_lite0", SIZE, 2) != key  # views
    changed = _backbone()
    with torch.no_grad():
        next(changed.parameters()).add_(0.01)
    assert cache_key(changed, "efficientnet_lite0", SIZE, 1) != key  # weights

    # New bytes under the same file name (the photo re-encoded): a miss, computed from the new picture.
    path = bench.path(records[0])
    original = path.read_bytes()
    try:
        with Image.open(path) as im:
            im.rotate(90).save(path, "JPEG", quality=70)
        edited = TrunkCache(tmp_path, key)
        fresh, _ = _build(bench, records[:1], backbone, edited)
        assert (edited.stats.hits, edited.stats.misses) == (0, 1)
        assert not np.array_equal(fresh[0].mid, entries[0].mid)
    finally:
        path.write_bytes(original)


def _train_retrieval(checkpoint: Path | str, data: Path) -> float:
    """Top-1 of training consumer photos against training shop photos (what the heads were fitted to)."""
    bench = load_benchmark(data)
    records = bench.split("train")
    if checkpoint == "imagenet":
        model, size = create_model("imagenet_efficientnet_lite0"), SIZE
        from shared.fashionnet.pretrained import EFFICIENTNET_LITE0_MEAN as mean
        from shared.fashionnet.pretrained import EFFICIENTNET_LITE0_STD as std
    else:
        model, meta = load_checkpoint(checkpoint)
        size, mean, std = meta.input_size, meta.mean, meta.std
    pred = predict(model, bench, records, size, mean, std, progress=False)
    query = np.array([r.domain == "consumer" for r in records])
    ids = np.array([r.item_id for r in records])
    return metrics.retrieval_topk(pred.embedding[query], ids[query], pred.embedding[~query], ids[~query],
                                  ks=(1,))["topk"][1]


def test_a_tiny_run_learns_and_is_deterministic(c2s, tmp_path) -> None:
    path = train(_config(c2s, tmp_path / "a", epochs=40), progress=False)
    trained = _train_retrieval(path, c2s)
    untrained = _train_retrieval("imagenet", c2s)
    assert trained > untrained + 0.1, (trained, untrained)
    _, meta = load_checkpoint(path)
    assert [h["stage"] for h in meta.notes["history"]][:2] == ["landmarks", "all"]
    assert "hit rate" in meta.notes["cache"]

    again = train(_config(c2s, tmp_path / "b", epochs=40), progress=False)
    first, second = read_checkpoint(path)["state_dict"], read_checkpoint(again)["state_dict"]
    for name in first:
        torch.testing.assert_close(first[name], second[name], msg=name)


def test_phase_3_fine_tunes_the_last_backbone_stage_only(c2s, tmp_path) -> None:
    path = train(_config(c2s, tmp_path / "p3", epochs=1, finetune_epochs=1), progress=False)
    trained, _ = load_checkpoint(path)
    fresh = create_model("fashionnet_efficientnet_lite0", num_categories=2, num_attributes=2)
    for prefix, module in (("mid", fresh.backbone.mid), ("top", fresh.backbone.top)):
        mine = getattr(trained.backbone, prefix).state_dict()
        moved = any(not torch.equal(v, mine[k]) for k, v in module.state_dict().items())
        assert moved == (prefix == "top"), prefix
    _, meta = load_checkpoint(path)
    assert [h["stage"] for h in meta.notes["history"]] == ["landmarks", "all", "finetune"]


def _groupings_only(c2s: Path, dest: Path) -> Path:
    """The same catalogue with only what a shop has: item groupings and bounding boxes."""
    shutil.copytree(c2s, dest)
    for name in ("list_landmarks_consumer2shop.txt", "list_category_cloth.txt", "list_category_img.txt",
                 "list_attr_cloth.txt", "list_attr_img.txt"):
        (dest / "Anno" / name).unlink(missing_ok=True)
    return dest


def test_item_groupings_only_needs_an_init_checkpoint_and_keeps_its_heads(c2s, tmp_path) -> None:
    shop = _groupings_only(c2s, tmp_path / "shop")
    assert load_benchmark(shop).categories == []
    with pytest.raises(InvalidInput, match=r"list_category_cloth\.txt.*--init-checkpoint"):
        train(_config(shop, tmp_path / "no-init"), progress=False)

    parent = train(_config(c2s, tmp_path / "parent", epochs=2), progress=False)
    child = train(_config(shop, tmp_path / "child", init_checkpoint=parent, epochs=3), progress=False)
    parent_state, child_state = read_checkpoint(parent)["state_dict"], read_checkpoint(child)["state_dict"]
    for prefix in ("landmark_branch.", "category_head.", "attribute_head.", "backbone."):
        for name in (n for n in parent_state if n.startswith(prefix)):
            torch.testing.assert_close(parent_state[name], child_state[name], msg=name)
    assert not torch.equal(parent_state["embedding_head.weight"], child_state["embedding_head.weight"])
    _, meta = load_checkpoint(child)
    assert meta.categories and meta.parent_version is not None
    assert set(meta.notes["frozen_heads"]) == {"landmark_branch.", "category_head.", "attribute_head."}


def _kill_when(cmd: list[str], ready, timeout: float = 240.0) -> None:
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            assert proc.poll() is None, "training ended before it could be killed"
            assert time.monotonic() < deadline, "training never reached the point to kill it at"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@pytest.mark.slow
def test_resume_after_sigkill_in_phase_1_and_in_phase_2(c2s, tmp_path) -> None:
    run, cache = tmp_path / "run", tmp_path / "cache"
    cmd = [sys.executable, "-m", "services.cli", "train", "--data", str(c2s), "--out", str(run), "--cache-dir",
           str(cache), "--input-size", str(SIZE), "--embedding-dim", "32", "--views", "2", "--items-per-batch", "6",
           "--images-per-item", "2", "--landmark-epochs", "1", "--epochs", "30", "--finetune-epochs", "0",
           "--workers", "0"]
    _kill_when(cmd, lambda: len(list(cache.rglob("*.npz"))) >= 10)  # phase 1, part-way through the images
    kept = len(list(cache.rglob("*.npz")))
    _kill_when(cmd, lambda: (run / "last.pt").exists())  # phase 2, after its first epoch
    epoch = read_checkpoint(run / "last.pt")["epoch"]
    assert 1 <= epoch < 31
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    _, meta = load_checkpoint(run / "model.pt")
    assert len(meta.notes["history"]) == 31
    assert "100% hit rate" in meta.notes["cache"]  # the third start computed nothing
    assert kept >= 10


def test_imagenet_baseline_checkpoint_ranks_as_the_pooled_imagenet_features(tiny_checkpoint, tmp_path) -> None:
    from shared.fashionnet.checkpoint import imagenet_baseline_checkpoint

    baseline, meta = load_checkpoint(imagenet_baseline_checkpoint(tiny_checkpoint, tmp_path / "base.pt"))
    reference = create_model("imagenet_efficientnet_lite0").eval()
    x = torch.randn(6, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours, theirs = baseline(x).embedding, reference(x).embedding
    torch.testing.assert_close(ours @ ours.T, theirs @ theirs.T, atol=1e-4, rtol=1e-4)
    assert meta.embedding_dim == 1280 and meta.parent_version == "tiny-1"
