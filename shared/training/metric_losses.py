"""The embedding's training loss, chosen by name; each is a module so stateful ones (proxies) save and resume.

- ``triplet``: batch-hard triplet (Hermans et al. 2017) over P items x K images per batch;
- ``softmax``: normalised softmax over the training item ids (cosine logits / temperature, one learned proxy
  per item, as in NormFace / proxy-based retrieval); the proxies are thrown away after training;
- ``supcon``: supervised contrastive (Khosla et al. 2020) over the batch;
- ``softmax+triplet``: the sum, as re-identification's "bag of tricks" baseline trains (Luo et al. 2019).

docs/RESULTS.md compares them under the cached-feature recipe; the default is the one that measured best.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from shared.fashionnet.losses import batch_hard_triplet_loss, supervised_contrastive_loss

METRIC_LOSSES: tuple[str, ...] = ("triplet", "softmax", "supcon", "softmax+triplet")


class MetricLoss(nn.Module):
    def forward(self, embedding: torch.Tensor, item: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError


class TripletLoss(MetricLoss):
    def __init__(self, margin: float | None) -> None:
        super().__init__()
        self.margin = margin

    def forward(self, embedding: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return batch_hard_triplet_loss(embedding, item, self.margin)


class SupConLoss(MetricLoss):
    def __init__(self, temperature: float) -> None:
        super().__init__()
        self.temperature = temperature

    def forward(self, embedding: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return supervised_contrastive_loss(embedding, item, self.temperature)


class NormalizedSoftmaxLoss(MetricLoss):
    def __init__(self, num_items: int, dim: int, temperature: float, seed: int) -> None:
        super().__init__()
        self.temperature = temperature
        self.proxies = nn.Parameter(torch.randn(max(num_items, 1), dim, generator=torch.Generator().manual_seed(seed)))

    def forward(self, embedding: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        known = item >= 0
        if not known.any():
            return embedding.sum() * 0.0
        logits = embedding[known] @ F.normalize(self.proxies, dim=-1).T / self.temperature
        return F.cross_entropy(logits, item[known])


class SumLoss(MetricLoss):
    def __init__(self, *losses: MetricLoss) -> None:
        super().__init__()
        self.losses = nn.ModuleList(losses)

    def forward(self, embedding: torch.Tensor, item: torch.Tensor) -> torch.Tensor:
        return sum(loss(embedding, item) for loss in self.losses)


def make_metric_loss(name: str, *, num_items: int, dim: int, margin: float | None, temperature: float,
                     seed: int) -> MetricLoss:
    if name == "triplet":
        return TripletLoss(margin)
    if name == "supcon":
        return SupConLoss(temperature)
    if name == "softmax":
        return NormalizedSoftmaxLoss(num_items, dim, temperature, seed)
    if name == "softmax+triplet":
        return SumLoss(NormalizedSoftmaxLoss(num_items, dim, temperature, seed), TripletLoss(margin))
    raise ValueError(f"expected a metric loss among {', '.join(METRIC_LOSSES)}, got {name!r}")
