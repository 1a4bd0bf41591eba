"""FashionNet (Liu et al., CVPR 2016): global + landmark-pooled local features, fused into four heads."""

from __future__ import annotations

from dataclasses import dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from shared.detection.head import GarmentHead
from shared.fashionnet.backbones import Backbone
from shared.fashionnet.blocks import GlobalBranch, LandmarkBranch, LandmarkPooling
from shared.vocabulary import NUM_LANDMARKS, VIS_VISIBLE


@dataclass
class FashionNetOutput:
    """What every forward returns, in training and in evaluation alike. Heads a model lacks are None."""

    embedding: torch.Tensor  # (B, D), L2-normalised
    landmarks: torch.Tensor | None = None  # (B, 8, 2) x, y as fractions of the input width/height
    visibility_logits: torch.Tensor | None = None  # (B, 8, 3): visible / occluded / truncated
    category_logits: torch.Tensor | None = None  # (B, num_categories)
    attribute_logits: torch.Tensor | None = None  # (B, num_attributes), independent sigmoids
    landmark_heatmaps: torch.Tensor | None = None  # (B, 8, H/16, W/16)
    garment_maps: torch.Tensor | None = None  # (B, 4 classes + 4, H/16, W/16): the garment detector's raw maps

    def as_tuple(self) -> tuple[torch.Tensor, ...]:
        """Present tensors in field order; what ONNX export and tracing need."""
        return tuple(v for f in fields(self) if (v := getattr(self, f.name)) is not None)


class FashionNet(nn.Module):
    def __init__(self, backbone: Backbone, *, num_categories: int, num_attributes: int, embedding_dim: int = 256,
                 landmark_pooling: bool = True, num_landmarks: int = NUM_LANDMARKS, fusion_dim: int = 512,
                 dropout: float = 0.2, embedding_skip: bool = False, embedding_neck: bool = False,
                 global_mid: bool = False, garment_box: bool = False, detector: bool = False) -> None:
        super().__init__()
        self.backbone = backbone
        # The garment detector (shared/detection) reads the same stride-16 map, so one forward of a whole photo
        # gives its analysis and where its garments are; None in models trained without outfit data.
        self.garment_head = GarmentHead(backbone.mid_channels) if detector else None
        self.landmark_pooling = landmark_pooling
        self.landmark_branch = LandmarkBranch(backbone.mid_channels, num_landmarks)
        # global_mid: the global branch also reads the stride-16 map's average, where colour and fine texture
        # survive better than after the last stage (which ImageNet training made colour-invariant).
        self.global_mid = global_mid
        self.global_branch = GlobalBranch(backbone.top_channels + (backbone.mid_channels if global_mid else 0),
                                          fusion_dim)
        self.local_branch = (
            LandmarkPooling(backbone.mid_channels, num_landmarks, fusion_dim, garment_box=garment_box)
            if landmark_pooling else None
        )
        fused_in = fusion_dim * (2 if landmark_pooling else 1)
        self.fusion = nn.Sequential(nn.Linear(fused_in, fusion_dim), nn.ReLU(inplace=True))
        # Dropout regularises the classification heads only: on the embedding's path it makes the two views of
        # one item disagree for no reason, which the metric loss then spends its steps fighting.
        self.head_dropout = nn.Dropout(dropout)
        self.category_head = nn.Linear(fusion_dim, num_categories)
        self.attribute_head = nn.Linear(fusion_dim, num_attributes)
        self.embedding_head = nn.Linear(fusion_dim, embedding_dim)
        # BN-neck (Luo et al. 2019, "Bag of Tricks" for re-id): batch-normalising the embedding before the L2
        # normalisation centres it, so cosine distances use every dimension instead of one shared offset.
        self.embedding_neck = nn.BatchNorm1d(embedding_dim) if embedding_neck else None
        self.embedding_skip: torch.Tensor | None
        if not embedding_skip:
            self.register_buffer("embedding_skip", None)
        else:
            # Not in the paper: a FIXED orthogonal projection of the pooled ImageNet features is added to the
            # learned embedding, whose head starts at zero. Retrieval then starts from the ImageNet baseline's
            # quality instead of a random projection, and the learned part is a residual on top of it: short
            # runs whose batch-hard triplet loss first drifts towards its collapse plateau cannot erase it.
            # A buffer, not a parameter, for exactly that reason (see docs/RESULTS.md for the measurements).
            projection = torch.empty(embedding_dim, backbone.top_channels)
            nn.init.orthogonal_(projection, generator=torch.Generator().manual_seed(0))
            self.register_buffer("embedding_skip", projection)
            nn.init.zeros_(self.embedding_head.weight)
            nn.init.zeros_(self.embedding_head.bias)

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, FashionNetOutput]:
        """Fused features, the pooled stride-32 features and the landmark part of the output."""
        mid, top = self.backbone(x)
        fused, pooled, partial = self.forward_branches(mid, F.adaptive_avg_pool2d(top, 1).flatten(1))
        if self.garment_head is not None:
            partial.garment_maps = self.garment_head(mid)
        return fused, pooled, partial

    def forward_branches(self, mid: torch.Tensor, pooled: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor,
                                                                                  FashionNetOutput]:
        """Everything after the backbone, from its stride-16 map and its globally pooled stride-32 map.

        The cached-feature trainer enters here: the backbone runs once per image and view, the branches learn.
        """
        coords, vis_logits, heatmaps = self.landmark_branch(mid)
        global_in = torch.cat([pooled, mid.mean(dim=(2, 3))], dim=1) if self.global_mid else pooled
        parts = [self.global_branch(global_in)]
        if self.local_branch is not None:
            # The paper gates each landmark's pooled features by its predicted visibility.
            gate = vis_logits.detach().softmax(dim=-1)[..., VIS_VISIBLE]
            parts.append(self.local_branch(mid, coords, gate))
        fused = self.fusion(torch.cat(parts, dim=1))
        partial = FashionNetOutput(embedding=fused, landmarks=coords, visibility_logits=vis_logits,
                                   landmark_heatmaps=heatmaps)
        return fused, pooled, partial

    def forward_head(self, fused: torch.Tensor, pooled: torch.Tensor, partial: FashionNetOutput) -> FashionNetOutput:
        embedding = self.embedding_head(fused)
        if self.embedding_neck is not None:
            embedding = self.embedding_neck(embedding)
        if self.embedding_skip is not None:
            embedding = embedding + F.normalize(pooled, dim=-1) @ self.embedding_skip.T
        partial.embedding = F.normalize(embedding, dim=-1)
        dropped = self.head_dropout(fused)
        partial.category_logits = self.category_head(dropped)
        partial.attribute_logits = self.attribute_head(dropped)
        return partial

    def forward(self, x: torch.Tensor) -> FashionNetOutput:
        return self.forward_head(*self.forward_features(x))

    def forward_trunk(self, mid: torch.Tensor, pooled: torch.Tensor) -> FashionNetOutput:
        """The whole output from cached backbone features (same result as `forward` on the image)."""
        return self.forward_head(*self.forward_branches(mid, pooled))


class BackboneEmbedder(nn.Module):
    """The ImageNet baseline: global average pooling of the untrained backbone as the embedding."""

    def __init__(self, backbone: Backbone) -> None:
        super().__init__()
        self.backbone = backbone

    def forward(self, x: torch.Tensor) -> FashionNetOutput:
        _, top = self.backbone(x)
        return FashionNetOutput(embedding=F.normalize(F.adaptive_avg_pool2d(top, 1).flatten(1), dim=-1))
