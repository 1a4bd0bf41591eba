"""Loss functions against hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch

from shared.errors import InvalidInput
from shared.fashionnet.losses import (
    attribute_pos_weight,
    batch_hard_triplet_loss,
    category_loss,
    distillation_loss,
    landmark_location_loss,
    visibility_loss,
)
from shared.fashionnet.model import FashionNetOutput
from shared.vocabulary import VIS_ABSENT, VIS_OCCLUDED, VIS_TRUNCATED, VIS_VISIBLE


def test_landmark_loss_ignores_truncated_and_absent() -> None:
    target = torch.zeros(1, 4, 2)
    pred = torch.tensor([[[0.5, 0.5], [0.01, 0.0], [9.0, 9.0], [9.0, 9.0]]])
    vis = torch.tensor([[VIS_VISIBLE, VIS_OCCLUDED, VIS_TRUNCATED, VIS_ABSENT]])
    # smooth-L1 with beta 0.02: |0.5| -> 0.5 - 0.01 = 0.49 (twice); |0.01| -> 0.5 * 0.01^2 / 0.02 = 0.0025; 0.
    expected = (0.49 + 0.49 + 0.0025 + 0.0) / 4
    assert landmark_location_loss(pred, target, vis).item() == pytest.approx(expected, rel=1e-5)


def test_visibility_loss_skips_absent_slots() -> None:
    logits = torch.tensor([[[10.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])
    vis = torch.tensor([[VIS_VISIBLE, VIS_ABSENT]])
    # -log(e^10 / (e^10 + 2)) = log(1 + 2 e^-10); float32 softmax keeps ~3 significant digits of it.
    assert visibility_loss(logits, vis).item() == pytest.approx(math.log1p(2 * math.exp(-10.0)), rel=1e-3)


def test_category_loss_unknown_labels_give_zero_not_nan() -> None:
    loss = category_loss(torch.randn(3, 4, requires_grad=True), torch.tensor([-1, -1, -1]))
    assert loss.item() == 0.0
    loss.backward()


def test_attribute_pos_weight_is_negatives_over_positives_capped() -> None:
    weights = attribute_pos_weight(torch.tensor([10.0, 1.0, 0.0, 100.0]), total=100, max_weight=50.0)
    assert weights.tolist() == pytest.approx([9.0, 50.0, 50.0, 1.0])


def test_batch_hard_triplet_picks_hardest_pairs() -> None:
    # Items 0 and 1, two images each, on the unit circle. Anchor 0 at angle 0.
    angles = torch.tensor([0.0, 0.6, 0.3, 1.5])
    emb = torch.stack([angles.cos(), angles.sin()], dim=1)
    item = torch.tensor([0, 0, 1, 1])
    dist = 1 - emb @ emb.T
    # anchor 0: hardest positive = image 1, hardest negative = image 2 (closer than 3).
    per_anchor = [
        dist[0, 1] - min(dist[0, 2], dist[0, 3]),
        dist[1, 0] - min(dist[1, 2], dist[1, 3]),
        dist[2, 3] - min(dist[2, 0], dist[2, 1]),
        dist[3, 2] - min(dist[3, 0], dist[3, 1]),
    ]
    expected = torch.stack([torch.relu(d + 0.2) for d in per_anchor]).mean()
    assert batch_hard_triplet_loss(emb, item, margin=0.2).item() == pytest.approx(expected.item(), rel=1e-5)


def test_triplet_without_positives_is_zero() -> None:
    emb = torch.nn.functional.normalize(torch.randn(3, 4), dim=1)
    assert batch_hard_triplet_loss(emb, torch.tensor([0, 1, 2])).item() == 0.0
    assert batch_hard_triplet_loss(emb, torch.tensor([-1, -1, -1])).item() == 0.0


def test_soft_margin_has_no_plateau_at_collapse() -> None:
    # All embeddings equal: the hard-margin loss sits at its margin, the soft margin at log 2 with a gradient.
    emb = torch.nn.functional.normalize(torch.ones(4, 3), dim=1).requires_grad_()
    item = torch.tensor([0, 0, 1, 1])
    assert batch_hard_triplet_loss(emb, item, margin=0.2).item() == pytest.approx(0.2, abs=1e-6)
    soft = batch_hard_triplet_loss(emb, item, margin=None)
    assert soft.item() == pytest.approx(math.log(2), rel=1e-5)


def test_supervised_contrastive_hand_computed() -> None:
    from shared.fashionnet.losses import supervised_contrastive_loss

    # Rows 0,1 are item 0; row 2 is item 1. Unit vectors at angles 0, 0, pi/2 -> cosines 1, 0, 0.
    emb = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    item = torch.tensor([0, 0, 1])
    t = 0.5
    # anchors 0 and 1: -log(e^{1/t} / (e^{1/t} + e^{0})); row 2 has no positive and is skipped.
    expected = -math.log(math.exp(1 / t) / (math.exp(1 / t) + 1.0))
    assert supervised_contrastive_loss(emb, item, temperature=t).item() == pytest.approx(expected, rel=1e-5)
    # A collapsed embedding costs log(batch - 1), not a flat zero-gradient plateau.
    collapsed = torch.ones(4, 2) / math.sqrt(2)
    loss = supervised_contrastive_loss(collapsed, torch.tensor([0, 0, 1, 1]), temperature=t)
    assert loss.item() == pytest.approx(math.log(3), rel=1e-5)


def _heads(category: list[float], attributes: list[float]) -> FashionNetOutput:
    return FashionNetOutput(embedding=torch.zeros(1, 2), category_logits=torch.tensor([category]),
                            attribute_logits=torch.tensor([attributes]))


def test_distillation_is_zero_when_the_heads_agree_and_grows_as_they_drift() -> None:
    teacher = _heads([2.0, 0.0, -1.0], [3.0, -2.0])
    assert distillation_loss(teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)
    near = distillation_loss(_heads([1.8, 0.0, -1.0], [2.5, -2.0]), teacher).item()
    far = distillation_loss(_heads([-2.0, 0.0, 3.0], [-3.0, 2.0]), teacher).item()
    assert 0 < near < far


def test_distillation_counts_only_the_heads_asked_for() -> None:
    teacher = _heads([2.0, 0.0, -1.0], [3.0, -2.0])
    moved_category = _heads([-2.0, 0.0, 3.0], [3.0, -2.0])
    moved_attributes = _heads([2.0, 0.0, -1.0], [-3.0, 2.0])
    assert distillation_loss(moved_category, teacher, ["attributes"]).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(moved_attributes, teacher, ["category"]).item() == pytest.approx(0.0, abs=1e-6)
    assert distillation_loss(moved_attributes, teacher, ["attributes"]).item() > 0
    assert distillation_loss(moved_category, teacher, ()).item() == 0.0
    both = distillation_loss(moved_category, teacher).item() + distillation_loss(moved_attributes, teacher).item()
    assert distillation_loss(_heads([-2.0, 0.0, 3.0], [-3.0, 2.0]), teacher).item() == pytest.approx(both)
    with pytest.raises(InvalidInput, match="expected distilled heads among"):
        distillation_loss(teacher, teacher, ["landmarks"])


def test_distillation_gradient_is_the_cross_entropy_to_the_teachers_answers() -> None:
    """The attribute term subtracts the teacher's entropy (a constant): the gradient is plain cross-entropy's."""
    torch.manual_seed(0)
    student = FashionNetOutput(embedding=torch.zeros(4, 2), category_logits=torch.randn(4, 5, requires_grad=True),
                               attribute_logits=torch.randn(4, 6, requires_grad=True))
    teacher = FashionNetOutput(embedding=torch.zeros(4, 2), category_logits=torch.randn(4, 5),
                               attribute_logits=torch.randn(4, 6))
    grads = torch.autograd.grad(distillation_loss(student, teacher),
                                [student.category_logits, student.attribute_logits])
    cross_entropy = (-(teacher.category_logits.softmax(-1) * student.category_logits.log_softmax(-1)).sum() / 4
                     + torch.nn.functional.binary_cross_entropy_with_logits(student.attribute_logits,
                                                                             teacher.attribute_logits.sigmoid()))
    expected = torch.autograd.grad(cross_entropy, [student.category_logits, student.attribute_logits])
    for got, want in zip(grads, expected, strict=True):
        torch.testing.assert_close(got, want)


def test_distillation_skips_heads_the_model_lacks() -> None:
    empty = FashionNetOutput(embedding=torch.zeros(2, 2, requires_grad=True), category_logits=torch.zeros(2, 0),
                             attribute_logits=None)
    loss = distillation_loss(empty, empty)
    assert loss.item() == 0.0
    loss.backward()  # still part of the graph: adding it to a training loss is always safe
