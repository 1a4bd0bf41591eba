"""FashionNet (Liu et al., CVPR 2016): global + landmark-pooled local features, fused into four heads."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from shared.data.records import NUM_LANDMARKS, VIS_VISIBLE
from shared.fashionnet.backbones import Backbone
from shared.fashionnet.blocks import GlobalBranch, LandmarkBranch, LandmarkPooling


@dataclass
class FashionNetOutput:
    """What every forward returns, in training and in evaluation alike. Heads a model lacks are None."""

    embedding: torch.Tensor  # (B, D), L2-normalised
    landmarks: torch.Tensor | None = None  # (B, 8, 2) x, y as fractions of the input width/height
    visibility_logits: torch.Tensor | None = None  # (B, 8, 3): visible / occluded / truncated
    category_logits: torch.Tensor | None = None  # (B, num_categories)
    attribute_logits: torch.Tensor | None = None  # (B, num_attributes), independent sigmoids
    landmark_heatmaps: torch.Tensor | None = None  # (B, 8, H/16, W/16)

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        """Present tensors in field order; what ONNX export and tracing need."""
        return tuple(v for f in fields(self) if (v := getattr(self, f.name)) is not None)


class FashionNet(nn.Module):
    def __init__(self, backbone: Backbone, *, num_categories: int, num_attributes: int, embedding_dim: int = 256,
                 landmark_pooling: bool = True, num_landmarks: int = NUM_LANDMARKS, fusion_dim: int = 512,
                 dropout: float = 0.2) -> None:
        super().__init__()
        self.backbone = backbone
        self.landmark_pooling = landmark_pooling
        self.landmark_branch = LandmarkBranch(backbone.mid_channels, num_landmarks)
        self.global_branch = GlobalBranch(backbone.top_channels, fusion_dim)
        self.local_branch = (
            LandmarkPooling(backbone.mid_channels, num_landmarks, fusion_dim) if landmark_pooling else None
        )
        fused_in = fusion_dim * (2 if landmark_pooling else 1)
        self.fusion = nn.Sequential(nn.Linear(fused_in, fusion_dim), nn.ReLU(inplace=True), nn.Dropout(dropout))
        self.category_head = nn.Linear(fusion_dim, num_categories)
        self.attribute_head = nn.Linear(fusion_dim, num_attributes)
        self.embedding_head = nn.Linear(fusion_dim, embedding_dim)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, FashionNetOutput]:
        """Fused features and the landmark part of the output (no classification heads yet)."""
        mid, top = self.backbone(x)
        coords, vis_logits, heatmaps = self.landmark_branch(mid)
        parts = [self.global_branch(top)]
        if self.local_branch is not None:
            # The paper gates each landmark's pooled features by its predicted visibility.
            gate = vis_logits.detach().softmax(dim=-1)[..., VIS_VISIBLE]
            parts.append(self.local_branch(mid, coords, gate))
        fused = self.fusion(torch.cat(parts, dim=1))
        partial = FashionNetOutput(embedding=fused, landmarks=coords, visibility_logits=vis_logits,
                                   landmark_heatmaps=heatmaps)
        return fused, partial

    def forward_head(self, fused: torch.Tensor, partial: FashionNetOutput) -> FashionNetOutput:
        partial.embedding = F.normalize(self.embedding_head(fused), dim=-1)
        partial.category_logits = self.category_head(fused)
        partial.attribute_logits = self.attribute_head(fused)
        return partial

    def forward(self, x: torch.Tensor) -> FashionNetOutput:
        return self.forward_head(*self.forward_features(x))


class BackboneEmbedder(nn.Module):
    """The ImageNet baseline: global average pooling of the untrained backbone as the embedding."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> FashionNetOutput:
        _, top = self.backbone(x)
        return FashionNetOutput(embedding=F.normalize(F.adaptive_avg_pool2d(top, 1).flatten(1), dim=-1))
