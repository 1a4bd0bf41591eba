"""Retraining logic without workers: pair splitting, the evaluation gate, lock decisions, trigger, simulated clicks,
fine-tuning on cached features."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from services.retrain import finetune as ft
from services.retrain import runs
from services.retrain.config import RetrainConfig
from services.retrain.gate import gate, product_embeddings, retrieval_scores
from services.retrain.pairs import ImageBank, split_pairs
from services.retrain.runs import RunStatus
from services.simulate import choose_click, click_probability
from shared.db import repository
from shared.db.models import RunState
from shared.db.repository import ClickPair
from shared.errors import InvalidInput, Unavailable
from shared.fashionnet.losses import distillation_loss

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def pair(n: int, product: str, *, photo: str | None = None, at: int | None = None) -> ClickPair:
    return ClickPair(query_id=f"q{n:03d}", query_image=b"jpeg", query_image_sha256=photo or f"sha{n:03d}",
                     created_at=T0 + timedelta(minutes=n if at is None else at), model_version="v1",
                     positive_product_id=product, negative_product_ids=("other",))


# ------------------------------------------------------------------------------------------------ pairs


def test_split_is_time_ordered_oldest_train_newest_holdout() -> None:
    pairs = [pair(n, f"p{n}") for n in range(10)]
    split = split_pairs(list(reversed(pairs)), holdout_fraction=0.2, min_pairs=5)
    assert [p.query_id for p in split.train] == [f"q{n:03d}" for n in range(8)]
    assert [p.query_id for p in split.holdout] == ["q008", "q009"]


def test_split_deduplicates_same_photo_and_product() -> None:
    pairs = [pair(n, f"p{n}") for n in range(6)]
    again = pair(7, "p2", photo="sha002", at=20)  # the same photo clicking the same product, searched later
    split = split_pairs([*pairs, again], holdout_fraction=0.34, min_pairs=6)
    everything = split.train + split.holdout
    assert len(everything) == 6
    assert [p.query_id for p in everything].count("q002") == 1 and "q007" not in {p.query_id for p in everything}


def test_split_keeps_one_photo_on_one_side() -> None:
    # The newest photo clicked two products: both pairs go to the holdout, never one on each side.
    pairs = [pair(n, f"p{n}") for n in range(8)] + [pair(8, "pa", photo="shared", at=8),
                                                   pair(9, "pb", photo="shared", at=8)]
    split = split_pairs(pairs, holdout_fraction=0.1, min_pairs=5)
    assert {p.query_image_sha256 for p in split.holdout} == {"shared"}
    assert "shared" not in {p.query_image_sha256 for p in split.train}


def test_too_little_data_says_what_was_expected() -> None:
    with pytest.raises(InvalidInput) as err:
        split_pairs([pair(n, "p") for n in range(3)], min_pairs=20)
    assert str(err.value) == ("expected at least 20 click pairs to retrain, found 3 (run `fashion simulate-clicks` "
                              "or wait for more traffic)")


# ------------------------------------------------------------------------------------------------ gate


def _unit(*rows: list[float]) -> np.ndarray:
    arr = np.asarray(rows, dtype=np.float32)
    return arr / np.linalg.norm(arr, axis=1, keepdims=True)


def test_product_embedding_is_the_normalised_mean_of_its_images() -> None:
    ids, emb = product_embeddings(_unit([1, 0], [0, 1], [1, 1]), ["b", "b", "a"])
    assert ids.tolist() == ["a", "b"]
    np.testing.assert_allclose(emb, _unit([1, 1], [1, 1]), atol=1e-6)


def _gallery(n: int = 30) -> tuple[np.ndarray, list[str]]:
    """n products on a circle: product k at angle k degrees, so cosine rank = angular distance."""
    angles = np.deg2rad(np.arange(n, dtype=np.float64))
    return np.stack([np.cos(angles), np.sin(angles)], 1).astype(np.float32), [f"p{k:02d}" for k in range(n)]


def test_retrieval_scores_rank_the_whole_catalogue() -> None:
    gallery, ids = _gallery()
    queries = gallery[[0, 5]]
    scores = retrieval_scores(queries, ["p00", "p29"], gallery, ids)  # p29 is 24 products away from p05
    assert scores == {"top1": 0.5, "top20": 0.5}


def test_gate_accepts_a_better_candidate_and_rejects_a_worse_one() -> None:
    gallery, ids = _gallery()
    truth = ["p00", "p01", "p02", "p29"]
    good = retrieval_scores(gallery[[0, 1, 2, 29]], truth, gallery, ids)  # every photo lands on its product
    bad = retrieval_scores(gallery[[29, 29, 29, 0]], truth, gallery, ids)  # far away from each
    assert good == {"top1": 1.0, "top20": 1.0} and bad["top20"] < 0.5

    accepted = gate(good, bad, min_improvement=0.005)
    assert accepted.accepted and accepted.message.startswith("accepted: candidate top-20 1.0000")
    rejected = gate(bad, good, min_improvement=0.005)
    assert not rejected.accepted and "rejected" in rejected.message and "serving 1.0000" in rejected.message


def test_gate_margin() -> None:
    same = {"top1": 0.5, "top20": 0.8}
    assert not gate(same, same, 0.005).accepted  # not better by the margin
    assert gate(same, same, 0.0).accepted  # 0 accepts "not worse"
    assert gate({"top1": 0.4, "top20": 0.7}, same, -1.0).accepted  # a negative margin forces acceptance
    assert gate({"top1": 0.5, "top20": 0.81}, same, 0.005).accepted


# ------------------------------------------------------------------------------------------------ config, liveness


def test_config_round_trips_through_the_run_row_and_refuses_bad_values() -> None:
    config = RetrainConfig(epochs=2, min_improvement=-1.0)
    assert RetrainConfig.from_dict(config.to_dict()) == config
    assert RetrainConfig.from_dict({**config.to_dict(), "dropped_setting": 1}) == config  # an older run's row
    with pytest.raises(InvalidInput, match="expected unfreeze one of"):
        RetrainConfig(unfreeze="everything")
    with pytest.raises(InvalidInput, match="unknown retraining settings"):
        config.with_overrides({"epoch": 3})


def test_epoch_batches_are_deterministic_and_capped() -> None:
    config = RetrainConfig(batch_pairs=4, seed=3)
    first = ft.epoch_batches(10, config, epoch=1)
    assert first == ft.epoch_batches(10, config, epoch=1) != ft.epoch_batches(10, config, epoch=2)
    assert sorted(i for b in first for i in b) == list(range(10)) and [len(b) for b in first] == [4, 4, 2]
    assert len(ft.epoch_batches(10, RetrainConfig(batch_pairs=4, max_steps_per_epoch=1), 0)) == 1
    assert [len(b) for b in ft.epoch_batches(9, config, 0)] == [4, 4]  # a lone last pair has no negative


@pytest.mark.parametrize(("state", "beat_s", "holder", "expected"), [
    (RunState.TRAINING, 5, "r1", "skip"),  # another worker trains this run: duplicate delivery
    (RunState.TRAINING, 500, "r1", "wait"),  # its worker died; the lock expires soon
    (RunState.TRAINING, 5, "r2", "wait"),  # another run trains
    (RunState.QUEUED, None, None, "wait"),  # the lock vanished in between: try again
])
def test_when_locked(state: RunState, beat_s: int | None, holder: str | None, expected: str) -> None:
    beat = None if beat_s is None else T0 - timedelta(seconds=beat_s)
    assert runs.when_locked(RunStatus(state, beat), "r1", holder, now=T0, stale_after_s=60) == expected


# ------------------------------------------------------------------------------------------------ trigger




def _serve(sessions) -> None:
    with sessions.begin() as s:
        repository.register_model_version(s, "v1", architecture="a", checkpoint_path="/x/model.pt", embedding_dim=8)
        repository.set_serving(s, "v1")


def test_trigger_creates_one_run_and_enqueues_it_once(sessions) -> None:
    _serve(sessions)
    sent: list[str] = []
    run_id, created = runs.trigger_run(sessions, sent.append, config=RetrainConfig(epochs=2))
    again, created_again = runs.trigger_run(sessions, sent.append)
    assert (created, created_again, again, sent) == (True, False, run_id, [run_id])
    with sessions() as s:
        run = repository.get_run(s, run_id)
        assert (run.state, run.epochs, run.base_version, run.config["epochs"]) == ("queued", 2, "v1", 2)


def test_trigger_without_a_serving_model_is_an_error(sessions) -> None:
    with pytest.raises(InvalidInput, match="expected a serving model"):
        runs.trigger_run(sessions, lambda run_id: None)


def test_trigger_fails_the_run_when_the_broker_refuses(sessions) -> None:
    _serve(sessions)

    def down(run_id: str) -> None:
        raise ConnectionError("redis is down")

    with pytest.raises(Unavailable, match="could not enqueue"):
        runs.trigger_run(sessions, down)
    with sessions() as s:
        [run] = repository.list_runs(s)
        assert run.state == "failed" and "redis is down" in run.message
    run_id, created = runs.trigger_run(sessions, lambda run_id: None)  # the failed run blocks nothing
    assert created and run_id != run.run_id


def test_trigger_re_enqueues_a_silent_run(sessions) -> None:
    _serve(sessions)
    sent: list[str] = []
    run_id, _ = runs.trigger_run(sessions, sent.append)
    runs.trigger_run(sessions, sent.append, stale_after_s=3600)
    assert sent == [run_id]
    runs.trigger_run(sessions, sent.append, stale_after_s=-1)  # silent for longer than -1 s: resend
    assert sent == [run_id, run_id]



def test_triggering_a_run_imports_neither_torch_nor_celery(sessions, tmp_path) -> None:
    """The admin side's trigger and reaper (services/retrain/trigger.py) load no model code, and Celery only when
    they send a task."""
    import subprocess
    import sys

    _serve(sessions)
    url = sessions.kw["bind"].url.render_as_string(hide_password=False)
    script = f"""
import sys
from services.retrain.settings import RetrainSettings
from services.retrain.trigger import Retraining, make_trigger
from shared.db import make_engine, session_factory

sent = []
sessions = session_factory(make_engine({url!r}))
make_trigger(RetrainSettings())  # the Celery one, never fired here
run_id, created = make_trigger(RetrainSettings(), enqueue=sent.append)(sessions, reason="test", epochs=2)
assert Retraining(RetrainSettings()).reap(sessions) == []  # the admin's every poll: nothing stalled, no Celery
print(created, sent == [run_id], sorted(m for m in ("torch", "celery") if m in sys.modules))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[2])
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n")[-2] == "True True []"
    with sessions() as s:
        assert repository.list_runs(s)[0].config["epochs"] == 2

# ------------------------------------------------------------------------------------------------ simulated shoppers


def test_click_probability_falls_with_position() -> None:
    assert click_probability(0, 0.5) == 1.0
    assert click_probability(3, 0.5) == pytest.approx(0.5)
    assert click_probability(3, 0.0) == 1.0


def test_choose_click_is_deterministic_and_clicks_the_true_product() -> None:
    hits = ["a", "b", "c"]
    picks = [choose_click(hits, "b", np.random.default_rng(s), position_bias=0.0, noise=0.0) for s in range(20)]
    assert set(picks) == {1}
    noisy = [choose_click(hits, "z", np.random.default_rng(s), position_bias=0.5, noise=1.0) for s in range(20)]
    assert noisy == [choose_click(hits, "z", np.random.default_rng(s), position_bias=0.5, noise=1.0)
                     for s in range(20)]
    assert None not in noisy and set(noisy) <= {0, 1, 2}
    assert choose_click(hits, "z", np.random.default_rng(0), position_bias=0.5, noise=0.0) is None


def test_audit_photos_are_labelled_test_consumer_photos(tmp_path) -> None:
    from services.retrain.gate import audit_photos
    from shared.data.deepfashion import load_benchmark
    from shared.data.synth import generate

    root = tmp_path / "c2s"
    generate("consumer2shop", root, 12, seed=2, image_size=64, workers=1, progress=False)
    photos = audit_photos(root)
    bench = load_benchmark(root, "consumer2shop")
    expected = {r.image: r.item_id for r in bench.split("val") if r.domain == "consumer"}
    assert {p.query_id: p.positive_product_id for p in photos} == expected
    assert all(p.query_image[:2] == b"\xff\xd8" for p in photos)  # the JPEG bytes themselves


def test_admin_metrics_flatten_nested_numbers() -> None:
    from services.admin.core import _numbers

    nested = {"candidate": {"top1": 0.5, "top20": 0.9}, "gate": {"accepted": True, "on": "audit"}, "x": 1}
    assert _numbers(nested) == {"candidate.top1": 0.5, "candidate.top20": 0.9, "x": 1.0}


# ------------------------------------------------------------------------------------------------ cached features


def _clicks(tmp_path, products: int = 5, photos: int = 8) -> tuple[ImageBank, list[ClickPair]]:
    """A bank of noise JPEGs (two per product, one of them unreadable for product 0) and click pairs on them."""
    import hashlib

    from PIL import Image

    from shared.imaging import ImageIntake, IntakePolicy

    rng = np.random.default_rng(0)

    def jpeg(path) -> bytes:
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(path, quality=90)
        return path.read_bytes()

    intake = ImageIntake(policy=IntakePolicy(roots=(tmp_path,)))  # the catalogue intake of a process
    bank = ImageBank(None, 64, intake)  # type: ignore[arg-type]  # products set below, not from a DB
    for p in range(products):
        bank.uris[f"p{p}"] = [str(tmp_path / f"p{p}-{i}.jpg") for i in range(2)]
        for uri in bank.uris[f"p{p}"]:
            jpeg(Path(uri))
    (tmp_path / "p0-0.jpg").write_bytes(b"not a jpeg")
    pairs = []
    for n in range(photos):
        data = jpeg(tmp_path / f"q{n}.jpg")
        pairs.append(ClickPair(query_id=f"q{n}", query_image=data, query_image_sha256=hashlib.sha256(data).hexdigest(),
                               created_at=T0, model_version="tiny-1", positive_product_id=f"p{n % products}",
                               negative_product_ids=tuple(f"p{(n + k) % products}" for k in (1, 2, 3))))
    return bank, pairs


@pytest.mark.parametrize("unfreeze", ["embedding", "fusion", "top"])
def test_cached_features_give_the_full_forwards_loss_and_embeddings(tmp_path, tiny_checkpoint, unfreeze) -> None:
    import torch

    from shared.fashionnet.checkpoint import load_checkpoint

    bank, pairs = _clicks(tmp_path)
    model, meta = load_checkpoint(tiny_checkpoint)
    config = RetrainConfig(unfreeze=unfreeze, batch_pairs=8, distill=1.0)
    ft.prepare_for_finetuning(model, config)
    model.eval()
    teacher = ft._teacher(model, config)
    assert ft.uses_cached_features(model)
    features = ft.prepare_features(model, meta, pairs, bank, config, cache_dir=tmp_path / "cache",
                                     device=torch.device("cpu"), progress_bar=False)
    assert not features.readable("uri:" + str(tmp_path / "p0-0.jpg")) and features.readable(bank.photo_key(pairs[0]))

    results = []
    for source in (None, features):
        model.zero_grad()
        out, labels, kept = ft.batch_outputs(model, teacher, pairs, bank, config, meta, np.random.default_rng(3),
                                               source, torch.device("cpu"))
        loss = ft.metric_loss(out, labels, config)
        if kept is not None:
            loss = loss + distillation_loss(out, kept)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
        results.append((out, labels, kept, loss.item(), grads))
    (full, full_labels, full_kept, full_loss, full_grads), (cached, labels, kept, loss, grads) = results

    assert torch.equal(labels, full_labels) and len(labels) > 2 * len(pairs)  # the same rows, in the same order
    torch.testing.assert_close(cached.embedding, full.embedding, atol=2e-3, rtol=0)
    torch.testing.assert_close(cached.category_logits, full.category_logits, atol=2e-3, rtol=2e-3)
    assert loss == pytest.approx(full_loss, rel=2e-3)
    assert (kept is None) == (full_kept is None) == (unfreeze == "embedding")
    if kept is not None:
        torch.testing.assert_close(kept.attribute_logits, full_kept.attribute_logits, atol=2e-3, rtol=2e-3)
    assert grads.keys() == full_grads.keys() and any(n.startswith("backbone.top.") for n in grads) == (
        unfreeze == "top")
    for name, grad in grads.items():  # float16 inputs: single elements move near ReLU kinks, the direction holds
        cosine = torch.nn.functional.cosine_similarity(grad.flatten(), full_grads[name].flatten(), dim=0)
        assert cosine > 0.999, name


def test_cached_features_are_read_back_not_recomputed(tmp_path, tiny_checkpoint, monkeypatch) -> None:
    import torch

    from services.retrain import features as features_module
    from shared.fashionnet.checkpoint import load_checkpoint

    bank, pairs = _clicks(tmp_path)
    model, meta = load_checkpoint(tiny_checkpoint)
    config = RetrainConfig()
    first = ft.prepare_features(model, meta, pairs, bank, config, cache_dir=tmp_path / "cache",
                                  device=torch.device("cpu"), progress_bar=False)
    keys = ft.images_to_prepare(pairs, bank, config)
    assert first.cache.stats.misses == len(keys) - 1 and first.cache.stats.hits == 0  # one image is unreadable

    def refuse(*args, **kwargs):
        raise AssertionError("expected every feature from the disk cache")

    monkeypatch.setattr(features_module, "backbone_features", refuse)
    again = ft.prepare_features(model, meta, pairs, bank, config, cache_dir=tmp_path / "cache",
                                  device=torch.device("cpu"), progress_bar=False)
    assert again.cache.stats.hits == len(keys) - 1 and again.cache.stats.misses == 0
    rows = [(k, flip) for k in keys if first.readable(k) for flip in (False, True)]
    for a, b in zip(first.batch(rows), again.batch(rows), strict=True):
        assert torch.equal(a, b)


def test_finetune_on_cached_features_is_deterministic_and_resumes_without_recomputing(
        tmp_path, tiny_checkpoint, sessions, monkeypatch) -> None:
    import torch

    from services.retrain import features as features_module
    from shared.fashionnet.checkpoint import load_checkpoint

    bank, pairs = _clicks(tmp_path)
    config = RetrainConfig(epochs=2, batch_pairs=4, unfreeze="top", lr=1e-3)
    with sessions.begin() as s:
        run_id = repository.create_or_get_active_run(s, "k", epochs=2, config=config.to_dict(),
                                                     base_version="tiny-1")[0].run_id

    def train(run_dir: str, epochs: int) -> dict:
        model, meta = load_checkpoint(tiny_checkpoint)
        ft.finetune(run_id, sessions=sessions, model=model, metadata=meta, base_version="tiny-1", pairs=pairs,
                      bank=bank, config=dataclasses.replace(config, epochs=epochs), run_dir=tmp_path / run_dir,
                      device=torch.device("cpu"), progress_bar=False, cache_dir=tmp_path / "cache")
        return model.state_dict()

    whole = train("whole", 2)
    train("killed", 1)
    monkeypatch.setattr(features_module, "backbone_features", lambda *a, **k: pytest.fail("recomputed features"))
    resumed = train("killed", 2)  # picks up last.pt after epoch 1, features from the cache
    again = train("whole-again", 2)
    for name, tensor in whole.items():
        assert torch.equal(resumed[name], tensor) and torch.equal(again[name], tensor), name
    base = load_checkpoint(tiny_checkpoint)[0].state_dict()
    moved = {n for n, t in whole.items() if not torch.equal(t, base[n])}
    assert any(n.startswith("backbone.top.") for n in moved) and not any(n.startswith("backbone.mid.") for n in moved)
