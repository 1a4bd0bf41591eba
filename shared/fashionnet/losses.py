"""FashionNet's training losses, kept out of `forward` so one model serves every training stage."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from shared.errors import InvalidInput
from shared.vocabulary import VIS_ABSENT, VIS_TRUNCATED

if TYPE_CHECKING:
    from shared.fashionnet.model import FashionNetOutput

# The heads distillation can hold in place: the classification heads, whose answers are stored with every product.
DISTILLED_HEADS: tuple[str, ...] = ("category", "attributes")


@dataclass
class Targets:
    """A batch's labels as tensors; masks mark what each image annotates."""

    landmarks: torch.Tensor  # (B, 8, 2) fractions of the input size
    visibility: torch.Tensor  # (B, 8) VIS_* codes
    category: torch.Tensor  # (B,) 0-based, -1 = unknown
    attributes: torch.Tensor  # (B, A) 0/1 float
    attributes_known: torch.Tensor  # (B,) bool
    item: torch.Tensor  # (B,) integer item id, -1 = unknown


def landmark_location_loss(pred: torch.Tensor, target: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    """Smooth-L1 on landmarks with a known position (visible or occluded; truncated ones lie outside)."""
    mask = visibility < VIS_TRUNCATED
    if not mask.any():
        return pred.sum() * 0.0
    return F.smooth_l1_loss(pred[mask], target[mask], beta=0.02)


def visibility_loss(logits: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    """Cross-entropy over visible / occluded / truncated for the landmarks the clothes type defines."""
    mask = visibility != VIS_ABSENT
    if not mask.any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits[mask], visibility[mask])


def category_loss(logits: torch.Tensor, category: torch.Tensor) -> torch.Tensor:
    if not (category >= 0).any():
        return logits.sum() * 0.0
    return F.cross_entropy(logits, category, ignore_index=-1)


def attribute_pos_weight(positives: torch.Tensor, total: int, max_weight: float = 50.0) -> torch.Tensor:
    """negatives/positives per attribute, capped: DeepFashion's attributes are very imbalanced."""
    negatives = total - positives
    return (negatives / positives.clamp(min=1)).clamp(1.0, max_weight)


def attribute_loss(logits: torch.Tensor, targets: torch.Tensor, known: torch.Tensor,
                   pos_weight: torch.Tensor | None = None) -> torch.Tensor:
    """Weighted binary cross-entropy, over images whose attributes are annotated."""
    if not known.any():
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], targets[known], pos_weight=pos_weight)


def batch_hard_triplet_loss(embedding: torch.Tensor, item: torch.Tensor, margin: float | None = 0.2) -> torch.Tensor:
    """Triplet loss with in-batch hard mining (Hermans et al. 2017) on cosine distance.

    For every anchor with at least one positive (another image of the same item) and one negative in the
    batch, take its farthest positive and its closest negative. Needs P items x K images per batch.
    `margin=None` is the soft margin, softplus(d_ap - d_an): no flat region where all distances are equal,
    so short runs do not slide into the collapsed solution the hard margin's plateau (loss = margin) allows.
    """
    known = item >= 0
    embedding, item = embedding[known], item[known]
    if embedding.shape[0] < 2:
        return embedding.sum() * 0.0
    dist = 1.0 - embedding @ embedding.T
    same = item[:, None] == item[None, :]
    eye = torch.eye(len(item), dtype=torch.bool, device=item.device)
    positive = same & ~eye
    valid = positive.any(dim=1) & (~same).any(dim=1)
    if not valid.any():
        return embedding.sum() * 0.0
    hardest_pos = dist.masked_fill(~positive, float("-inf")).amax(dim=1)
    hardest_neg = dist.masked_fill(same, float("inf")).amin(dim=1)
    gap = hardest_pos - hardest_neg
    return (F.softplus(gap) if margin is None else F.relu(gap + margin))[valid].mean()


def supervised_contrastive_loss(embedding: torch.Tensor, item: torch.Tensor,
                                temperature: float = 0.05) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020) on L2-normalised embeddings.

    For each anchor with a positive in the batch: -log of the softmax weight of each positive among all
    other rows. Every in-batch negative competes, the closest ones weigh most (soft hard mining), and a
    collapsed embedding costs log(batch) instead of sitting on a flat plateau like the margin loss does.
    """
    known = item >= 0
    embedding, item = embedding[known], item[known]
    n = embedding.shape[0]
    eye = torch.eye(n, dtype=torch.bool, device=embedding.device)
    positive = (item[:, None] == item[None, :]) & ~eye
    anchors = positive.any(dim=1)
    if not anchors.any():
        return embedding.sum() * 0.0
    logits = (embedding @ embedding.T / temperature).masked_fill(eye, float("-inf"))
    log_prob = logits - logits.logsumexp(dim=1, keepdim=True)
    per_anchor = -(log_prob.masked_fill(~positive, 0.0).sum(dim=1) / positive.sum(dim=1).clamp(min=1))
    return per_anchor[anchors].mean()


def distillation_loss(student: FashionNetOutput, teacher: FashionNetOutput,
                      heads: Collection[str] = DISTILLED_HEADS) -> torch.Tensor:
    """How far the classification heads in ``heads`` moved from a frozen teacher's answers ("learning without
    forgetting", Li & Hoiem 2016): the KL divergence of the category softmax plus the mean KL divergence of each
    attribute's sigmoid. Zero when nothing moved.

    Used wherever shared layers train on data without labels for those heads (``fashion train`` fine-tuning on
    a benchmark without categories, retraining from clicks): without it the categories and attributes products
    are stored and filtered with would drift silently. Heads a model lacks (None, or zero classes) add nothing.
    The attribute term subtracts the teacher's own entropy, a constant: it changes the value, not the gradient.
    """
    unknown = set(heads) - set(DISTILLED_HEADS)
    if unknown:
        raise InvalidInput(f"expected distilled heads among {list(DISTILLED_HEADS)}, got {sorted(unknown)}")
    loss = student.embedding.sum() * 0.0
    if "category" in heads and student.category_logits is not None and student.category_logits.shape[1]:
        loss = loss + F.kl_div(student.category_logits.log_softmax(-1), teacher.category_logits.log_softmax(-1),
                               log_target=True, reduction="batchmean")
    if "attributes" in heads and student.attribute_logits is not None and student.attribute_logits.shape[1]:
        target = teacher.attribute_logits.sigmoid()
        loss = loss + (F.binary_cross_entropy_with_logits(student.attribute_logits, target)
                       - F.binary_cross_entropy_with_logits(teacher.attribute_logits, target))
    return loss


@dataclass(frozen=True)
class LossWeights:
    landmarks: float = 1.0
    visibility: float = 0.2
    category: float = 1.0
    attributes: float = 1.0
    metric: float = 1.0


def total_loss(out, targets: Targets, weights: LossWeights, *, stage: str, pos_weight: torch.Tensor | None = None,
               margin: float | None = 0.2, metric=None) -> dict[str, torch.Tensor]:
    """Per-term losses plus "total". Stage "landmarks" trains only landmarks + visibility (the paper's
    first stage); stage "all" trains every task jointly. `metric(embedding, item)` is the embedding's loss
    (default: batch-hard triplet with `margin`)."""
    terms = {
        "landmarks": landmark_location_loss(out.landmarks, targets.landmarks, targets.visibility),
        "visibility": visibility_loss(out.visibility_logits, targets.visibility),
    }
    if stage == "all":
        terms["category"] = category_loss(out.category_logits, targets.category)
        terms["attributes"] = attribute_loss(out.attribute_logits, targets.attributes, targets.attributes_known,
                                             pos_weight)
        terms["metric"] = (metric(out.embedding, targets.item) if metric is not None
                           else batch_hard_triplet_loss(out.embedding, targets.item, margin))
    terms["total"] = sum(getattr(weights, name) * value for name, value in terms.items())
    return terms
