"""Inference engines agree with eager PyTorch: ONNX Runtime (dynamic batch, both exporters), channels_last,
`create_engine("auto")`, the export cache, and clear errors for bad kinds and bad batches.

Tiny random-weight models at 64 px keep this fast; one dynamo export (~7 s on 2 cores) is shared by the module.
Throughput is not asserted here: `fashion bench model` measures it.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from shared.errors import InvalidInput
from shared.fashionnet import FashionNetOutput, create_model
from shared.fashionnet import inference as inf
from shared.fashionnet.inference import (
    ENGINE_KINDS,
    ONNX_TOLERANCE,
    EagerEngine,
    OnnxEngine,
    create_engine,
    export_onnx,
    max_abs_diff,
    tolerance_violations,
)
from shared.vocabulary import NUM_LANDMARKS

SIZE = 64
NUM_CATEGORIES, NUM_ATTRIBUTES, EMBEDDING_DIM = 5, 7, 16


def _model(seed: int = 0, **kwargs) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model("fashionnet_efficientnet_lite0", pretrained=False, num_categories=NUM_CATEGORIES,
                        num_attributes=NUM_ATTRIBUTES, embedding_dim=EMBEDDING_DIM, **kwargs).eval()


def _batch(n: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(n, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(seed))


def _assert_close(out: FashionNetOutput, ref: FashionNetOutput) -> None:
    diffs = max_abs_diff(out, ref)
    assert set(diffs) == {"embedding", "landmarks", "visibility_logits", "category_logits", "attribute_logits",
                          "landmark_heatmaps"}
    assert not tolerance_violations(diffs), diffs


@pytest.fixture(scope="module")
def model() -> torch.nn.Module:
    return _model()


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx-cache")


@pytest.fixture(scope="module")
def onnx_engine(model: torch.nn.Module, cache_dir: Path) -> OnnxEngine:
    return OnnxEngine.from_model(model, input_size=SIZE, cache_dir=cache_dir, exporter="dynamo")


@pytest.mark.parametrize("n", [1, 3, 8])
def test_onnx_matches_eager_at_any_batch_size(model: torch.nn.Module, onnx_engine: OnnxEngine, n: int) -> None:
    x = _batch(n)
    out, ref = onnx_engine.run(x), EagerEngine(model).run(x)
    assert out.embedding.shape == (n, EMBEDDING_DIM)
    assert out.landmarks.shape == (n, NUM_LANDMARKS, 2)
    assert out.category_logits.shape == (n, NUM_CATEGORIES)
    assert out.attribute_logits.shape == (n, NUM_ATTRIBUTES)
    assert all(isinstance(t, torch.Tensor) and t.dtype == torch.float32 for t in out.as_tuple())
    _assert_close(out, ref)


def test_onnx_accepts_numpy_and_torch_alike(onnx_engine: OnnxEngine) -> None:
    x = _batch(2)
    assert max(max_abs_diff(onnx_engine.run(x.numpy()), onnx_engine.run(x)).values()) == 0.0


@pytest.mark.parametrize("landmark_pooling", [True, False])
def test_legacy_exporter_matches_eager_too(tmp_path: Path, landmark_pooling: bool) -> None:
    model = _model(landmark_pooling=landmark_pooling)
    engine = OnnxEngine(export_onnx(model, tmp_path / "legacy.onnx", input_size=SIZE, exporter="legacy"))
    x = _batch(3)
    _assert_close(engine.run(x), EagerEngine(model).run(x))


def test_channels_last_matches_eager(model: torch.nn.Module) -> None:
    x = _batch(4)
    engine = EagerEngine(model, channels_last=True)
    assert engine.kind == "channels_last"
    _assert_close(engine.run(x), EagerEngine(model).run(x))
    # The engine works on its own copy: the caller's model keeps its layout.
    assert model.backbone.mid[0].weight.is_contiguous()


def test_auto_returns_a_working_verified_engine(model: torch.nn.Module, cache_dir: Path,
                                                onnx_engine: OnnxEngine) -> None:
    engine = create_engine(model, "auto", input_size=SIZE, cache_dir=cache_dir, device="cpu")
    assert engine.kind == "onnx"  # the export verified against PyTorch, so auto picks ONNX Runtime on CPU
    assert engine.path == onnx_engine.path  # and reused the module's cached export
    x = _batch(2)
    _assert_close(engine.run(x), EagerEngine(model).run(x))


def test_auto_falls_back_to_channels_last_when_export_fails(model: torch.nn.Module, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    def broken_export(*args, **kwargs):
        raise RuntimeError("unsupported operator")

    monkeypatch.setattr(inf, "export_onnx", broken_export)
    engine = create_engine(model, "auto", input_size=SIZE, cache_dir=tmp_path, device="cpu")
    assert engine.kind == "channels_last"
    assert engine.run(_batch(1)).embedding.shape == (1, EMBEDDING_DIM)


@pytest.mark.parametrize("kind", ["eager", "channels_last"])
def test_create_engine_eager_kinds(model: torch.nn.Module, kind: str) -> None:
    engine = create_engine(model, kind, input_size=SIZE, cache_dir=None, device="cpu")
    assert engine.kind == kind
    assert engine.run(_batch(2)).landmarks.shape == (2, NUM_LANDMARKS, 2)


def test_unknown_kind_names_the_valid_ones(model: torch.nn.Module) -> None:
    with pytest.raises(InvalidInput) as err:
        create_engine(model, "tensorrt", input_size=SIZE, cache_dir=None)
    assert all(kind in str(err.value) for kind in ENGINE_KINDS)
    assert "tensorrt" in str(err.value)


def test_export_cache_is_keyed_by_weights_and_size(model: torch.nn.Module, cache_dir: Path,
                                                   onnx_engine: OnnxEngine, monkeypatch: pytest.MonkeyPatch) -> None:
    assert inf.onnx_cache_path(cache_dir, model, input_size=SIZE) == onnx_engine.path
    assert inf.onnx_cache_path(cache_dir, model, input_size=96) != onnx_engine.path
    assert inf.onnx_cache_path(cache_dir, _model(seed=1), input_size=SIZE) != onnx_engine.path
    assert inf.onnx_cache_path(cache_dir, model, input_size=SIZE, cache_key="fn-1").name.startswith("fn-1-64px-")

    def no_export(*args, **kwargs):
        raise AssertionError("expected the cached export to be reused")

    monkeypatch.setattr(inf, "export_onnx", no_export)
    assert OnnxEngine.from_model(model, input_size=SIZE, cache_dir=cache_dir).path == onnx_engine.path


@pytest.mark.parametrize("batch, expected", [
    (torch.zeros(0, 3, SIZE, SIZE), "non-empty"),
    (torch.zeros(2, SIZE, SIZE, 3), "(N, 3, H, W)"),
    (torch.zeros(2, 3, 96, 96), f"{SIZE}x{SIZE}"),
    (np.zeros((2, 3, SIZE, SIZE), dtype=np.uint8), "float32"),
    ([[0.0]], "numpy array or torch tensor"),
])
def test_bad_batches_are_refused_with_what_was_expected(onnx_engine: OnnxEngine, batch: object,
                                                        expected: str) -> None:
    with pytest.raises(InvalidInput, match="expected") as err:
        onnx_engine.run(batch)
    assert expected in str(err.value)


def test_backbone_embedder_exports_only_the_embedding(tmp_path: Path) -> None:
    torch.manual_seed(0)
    embedder = create_model("imagenet_efficientnet_lite0", pretrained=False).eval()
    engine = OnnxEngine(export_onnx(embedder, tmp_path / "backbone.onnx", input_size=SIZE, exporter="legacy"))
    assert engine.output_names == ["embedding"]
    x = _batch(2)
    out = engine.run(x)
    assert out.landmarks is None and out.category_logits is None
    assert max_abs_diff(out, EagerEngine(embedder).run(x))["embedding"] <= ONNX_TOLERANCE["embedding"]


def test_max_abs_diff_flags_missing_fields_and_shape_mismatch() -> None:
    a = FashionNetOutput(embedding=torch.zeros(2, 4), landmarks=torch.zeros(2, 8, 2))
    b = FashionNetOutput(embedding=torch.full((2, 4), 0.5))
    assert max_abs_diff(a, b) == {"embedding": 0.5, "landmarks": math.inf}
    assert max_abs_diff(a, FashionNetOutput(embedding=torch.zeros(3, 4), landmarks=a.landmarks)) == {
        "embedding": math.inf, "landmarks": 0.0}
    assert tolerance_violations({"embedding": 0.5, "landmarks": 0.0}) == {"embedding": 0.5}
    assert "embedding" in tolerance_violations({"embedding": math.nan})
