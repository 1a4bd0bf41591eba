"""Model tests, parametrised over the registry as timm does: shapes, finiteness, a backward step,
checkpoints that round-trip and refuse conflicting arguments, and the shipped ImageNet weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data as skdata

from shared.errors import CheckpointMismatch
from shared.fashionnet import create_model, default_metadata, list_models, load_checkpoint, save_checkpoint
from shared.fashionnet.checkpoint import build_model
from shared.fashionnet.losses import LossWeights, Targets, total_loss
from shared.fashionnet.preprocess import preprocess
from shared.fashionnet.pretrained import EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD, efficientnet_lite0_imagenet
from shared.vocabulary import ATTRIBUTE_GROUPS, NUM_LANDMARKS, Attribute, Category, ClothesType

FASHIONNETS = [name for name in list_models() if name.startswith("fashionnet_")]
CATEGORIES = [Category(f"c{i}", ClothesType(1 + i % 3)) for i in range(5)]
ATTRIBUTES = [Attribute(f"a{i}", ATTRIBUTE_GROUPS[i % 5]) for i in range(12)]


def _targets(batch: int) -> Targets:
    g = torch.Generator().manual_seed(0)
    return Targets(
        landmarks=torch.rand(batch, NUM_LANDMARKS, 2, generator=g),
        visibility=torch.randint(0, 4, (batch, NUM_LANDMARKS), generator=g),
        category=torch.randint(0, len(CATEGORIES), (batch,), generator=g),
        attributes=torch.randint(0, 2, (batch, len(ATTRIBUTES)), generator=g).float(),
        attributes_known=torch.ones(batch, dtype=torch.bool),
        item=torch.tensor([0, 0, 1, 1]),
    )


@pytest.mark.parametrize("name", FASHIONNETS)
@pytest.mark.parametrize(("landmark_pooling", "embedding_skip"), [(True, False), (False, False), (True, True)])
def test_forward_shapes_finite_and_one_backward_step(name: str, landmark_pooling: bool, embedding_skip: bool) -> None:
    torch.manual_seed(0)
    model = create_model(name, pretrained=False, num_categories=len(CATEGORIES), num_attributes=len(ATTRIBUTES),
                         embedding_dim=32, landmark_pooling=landmark_pooling, embedding_skip=embedding_skip).train()
    x = torch.randn(4, 3, 64, 64)
    out = model(x)
    assert out.embedding.shape == (4, 32)
    assert torch.allclose(out.embedding.norm(dim=1), torch.ones(4), atol=1e-5)
    assert out.landmarks.shape == (4, NUM_LANDMARKS, 2)
    assert ((out.landmarks >= 0) & (out.landmarks <= 1)).all()
    assert out.visibility_logits.shape == (4, NUM_LANDMARKS, 3)
    assert out.category_logits.shape == (4, len(CATEGORIES))
    assert out.attribute_logits.shape == (4, len(ATTRIBUTES))
    assert all(torch.isfinite(t).all() for t in out.as_tuple())

    losses = total_loss(out, _targets(4), LossWeights(), stage="all")
    assert set(losses) == {"landmarks", "visibility", "category", "attributes", "metric", "total"}
    assert torch.isfinite(losses["total"])
    losses["total"].backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)
    head = model.embedding_head.weight
    assert head.grad is not None and head.grad.abs().sum() > 0  # a zero-initialised head still learns


def test_embedding_skip_starts_from_the_imagenet_features() -> None:
    """With the skip, an untrained model's embedding is an orthogonal projection of the pooled ImageNet
    features, so retrieval starts at the baseline instead of at a random projection."""
    model = create_model("fashionnet_efficientnet_lite0", num_categories=5, num_attributes=12, embedding_dim=64,
                         embedding_skip=True).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        _, top = model.backbone(x)
        pooled = torch.nn.functional.normalize(top.mean(dim=(2, 3)), dim=-1)
        expected = torch.nn.functional.normalize(pooled @ model.embedding_skip.T, dim=-1)
        assert torch.allclose(model(x).embedding, expected, atol=1e-5)
    w = model.embedding_skip
    assert not any(p is w for p in model.parameters())  # fixed: training cannot erase the baseline
    assert torch.allclose(w @ w.T, torch.eye(64), atol=1e-4)  # orthonormal rows: angles roughly preserved


def test_landmark_stage_trains_only_landmark_terms() -> None:
    model = create_model("fashionnet_efficientnet_lite0", pretrained=False, num_categories=5, num_attributes=12)
    losses = total_loss(model(torch.randn(4, 3, 64, 64)), _targets(4), LossWeights(), stage="landmarks")
    assert set(losses) == {"landmarks", "visibility", "total"}
    losses["total"].backward()
    assert model.category_head.weight.grad is None
    assert model.landmark_branch.heatmap.weight.grad.abs().sum() > 0


def test_local_branch_follows_landmarks() -> None:
    """Landmark pooling must read where the landmarks are: moving them changes the pooled features."""
    model = create_model("fashionnet_efficientnet_lite0", pretrained=False, num_categories=5,
                         num_attributes=12).eval()
    mid = torch.randn(1, model.backbone.mid_channels, 8, 8)
    gate = torch.ones(1, NUM_LANDMARKS)
    a = model.local_branch(mid, torch.full((1, NUM_LANDMARKS, 2), 0.25), gate)
    b = model.local_branch(mid, torch.full((1, NUM_LANDMARKS, 2), 0.75), gate)
    closed = model.local_branch(mid, torch.full((1, NUM_LANDMARKS, 2), 0.25), torch.zeros(1, NUM_LANDMARKS))
    assert not torch.allclose(a, b)
    # With every gate closed the local features carry nothing from the image: only the FC bias remains.
    assert torch.allclose(closed, torch.relu(model.local_branch.fc[0].bias).unsqueeze(0))


def test_checkpoint_round_trip_and_conflicts(tmp_path) -> None:
    meta = default_metadata("fashionnet_efficientnet_lite0", CATEGORIES, ATTRIBUTES, version="t-1",
                            embedding_dim=32, input_size=64)
    model = build_model(meta, pretrained=False).eval()
    path = save_checkpoint(tmp_path / "m.pt", model, meta)
    loaded, loaded_meta = load_checkpoint(path, embedding_dim=32, num_categories=5)
    assert loaded_meta == meta
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert torch.allclose(model(x).embedding, loaded(x).embedding)
    with pytest.raises(CheckpointMismatch, match=r"embedding_dim=32.*embedding_dim=128"):
        load_checkpoint(path, embedding_dim=128)
    with pytest.raises(CheckpointMismatch, match=r"num_attributes=12"):
        load_checkpoint(path, num_attributes=1000)
    with pytest.raises(CheckpointMismatch, match="expected a checkpoint file"):
        load_checkpoint(tmp_path / "missing.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(Exception, match="."):
        load_checkpoint(tmp_path / "junk.pt")


def test_unknown_model_and_torchvision_imagenet_without_file() -> None:
    with pytest.raises(CheckpointMismatch, match="expected a model name among"):
        create_model("fashionnet_alexnet")
    with pytest.raises(CheckpointMismatch, match="local weights file for vgg16"):
        create_model("fashionnet_vgg16", pretrained=True, weights_path="imagenet", num_categories=2,
                     num_attributes=2)


@pytest.mark.parametrize(("photo", "imagenet_class"), [("chelsea", 285), ("coffee", 967)])
def test_shipped_imagenet_weights_recognise_photos(photo: str, imagenet_class: int) -> None:
    """The remapped package weights are really ImageNet's: cat -> Egyptian cat (285), coffee -> espresso (967)."""
    model = efficientnet_lite0_imagenet()
    image = Image.fromarray(np.asarray(getattr(skdata, photo)()))
    with torch.no_grad():
        logits = model(preprocess([image], 224, EFFICIENTNET_LITE0_MEAN, EFFICIENTNET_LITE0_STD))
    assert int(logits.argmax()) == imagenet_class
    assert float(logits.softmax(-1).max()) > 0.5


def test_fashionnet_backbone_carries_the_imagenet_weights() -> None:
    reference = efficientnet_lite0_imagenet()
    model = create_model("fashionnet_efficientnet_lite0", num_categories=2, num_attributes=2)
    assert torch.equal(model.backbone.mid[0].weight, reference.conv_stem.weight)
    assert torch.equal(model.backbone.top[-1].weight, reference.bn2.weight)


@pytest.mark.parametrize(("landmark_pooling", "embedding_neck", "garment_box"),
                         [(True, True, False), (False, True, False), (True, False, False), (True, True, True)])
def test_forward_trunk_on_backbone_features_equals_forward_on_the_image(landmark_pooling: bool, embedding_neck: bool,
                                                                         garment_box: bool) -> None:
    """The cached-feature trainer feeds forward_trunk what the backbone computed once: same outputs."""
    torch.manual_seed(0)
    model = create_model("fashionnet_efficientnet_lite0", pretrained=False, num_categories=5, num_attributes=7,
                         embedding_dim=16, landmark_pooling=landmark_pooling, embedding_neck=embedding_neck,
                         garment_box=garment_box).eval()
    x = torch.randn(3, 3, 64, 64)
    with torch.no_grad():
        mid, top = model.backbone(x)
        cached = model.forward_trunk(mid.half().float(), top.mean(dim=(2, 3)))
        direct = model(x)
    for name in ("embedding", "landmarks", "category_logits", "attribute_logits"):
        torch.testing.assert_close(getattr(cached, name), getattr(direct, name), atol=2e-2, rtol=2e-2, msg=name)
