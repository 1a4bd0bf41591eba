"""FashionNet's branches: landmark localisation, landmark pooling (local), global pooling."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.ops import roi_align


def conv_bn_relu(cin: int, cout: int, kernel: int = 3) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, kernel, padding=kernel // 2, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


def soft_argmax(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, K, H, W) logits -> (B, K, 2) expected x, y in [0, 1] and the (B, K, H*W) attention used.

    Differentiable, so the landmark branch trains with a plain coordinate regression loss as in the paper,
    while the spatial softmax keeps sub-cell precision on a coarse stride-16 grid.
    """
    b, k, h, w = heatmaps.shape
    attention = heatmaps.flatten(2).softmax(dim=-1)
    ys = (torch.arange(h, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5) / h
    xs = (torch.arange(w, device=heatmaps.device, dtype=heatmaps.dtype) + 0.5) / w
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    x = attention @ grid_x.reshape(-1, 1)
    y = attention @ grid_y.reshape(-1, 1)
    return torch.cat([x, y], dim=-1), attention


class LandmarkBranch(nn.Module):
    """Predicts landmark positions (soft-argmax over heatmaps) and visibility (visible/occluded/truncated)."""

    def __init__(self, in_channels: int, num_landmarks: int, hidden: int = 128, num_visibility: int = 3) -> None:
        super().__init__()
        self.num_landmarks = num_landmarks
        self.num_visibility = num_visibility
        self.features = nn.Sequential(conv_bn_relu(in_channels, hidden), conv_bn_relu(hidden, hidden))
        self.heatmap = nn.Conv2d(hidden, num_landmarks, 1)
        # Each landmark's own attended features plus the image context decide its visibility.
        self.visibility = nn.Linear(num_landmarks * hidden + hidden, num_landmarks * num_visibility)

    def forward(self, mid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        feats = self.features(mid)
        heatmaps = self.heatmap(feats)
        coords, attention = soft_argmax(heatmaps)
        flat = feats.flatten(2)  # B, C, HW
        attended = attention @ flat.transpose(1, 2)  # B, K, C
        context = flat.mean(dim=-1)
        vis = self.visibility(torch.cat([attended.flatten(1), context], dim=1))
        return coords, vis.view(-1, self.num_landmarks, self.num_visibility), heatmaps


class LandmarkPooling(nn.Module):
    """The paper's local branch: features pooled in a box around each predicted landmark, gated by visibility.

    Boxes follow the predicted (detached) landmarks, so the local features align with garment parts even
    when the garment is rotated, shifted or scaled; gating zeroes landmarks predicted occluded/truncated.
    """

    def __init__(self, in_channels: int, num_landmarks: int, out_dim: int, channels: int = 64,
                 pool_size: int = 3, box_fraction: float = 0.25, garment_box: bool = False) -> None:
        super().__init__()
        self.proj = conv_bn_relu(in_channels, channels, kernel=1)
        self.pool_size = pool_size
        self.box_fraction = box_fraction
        # garment_box: one more region, the box the visible landmarks span (plus a margin), so the garment as a
        # whole is described without the clutter around it that the global average takes in.
        self.garment_box = garment_box
        regions = num_landmarks + (1 if garment_box else 0)
        self.fc = nn.Sequential(nn.Linear(regions * channels * pool_size * pool_size, out_dim),
                                nn.ReLU(inplace=True))

    def forward(self, mid: torch.Tensor, coords: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        feats = self.proj(mid)
        b, k, _ = coords.shape
        h, w = feats.shape[-2:]
        # Boxes in feature-map coordinates (spatial_scale=1): centre +- half a box, box = fraction of the image.
        centres = coords.detach() * torch.tensor([w, h], device=coords.device, dtype=coords.dtype)
        half = torch.tensor([w, h], device=coords.device, dtype=coords.dtype) * (self.box_fraction / 2)
        boxes = torch.cat([centres - half, centres + half], dim=-1).reshape(b * k, 4)
        index = torch.arange(b, device=coords.device, dtype=coords.dtype).repeat_interleave(k).unsqueeze(1)
        pooled = roi_align(feats, torch.cat([index, boxes], dim=1), output_size=self.pool_size,
                           spatial_scale=1.0, sampling_ratio=2, aligned=True)
        pooled = pooled.reshape(b, k, -1) * gate.unsqueeze(-1)
        if self.garment_box:
            pooled = torch.cat([pooled, self._garment(feats, coords.detach(), gate.detach())], dim=1)
        return self.fc(pooled.flatten(1))

    def _garment(self, feats: torch.Tensor, coords: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
        """(B, 1, C * pool^2): features pooled over the box spanned by landmarks predicted visible."""
        b = coords.shape[0]
        h, w = feats.shape[-2:]
        scale = torch.tensor([w, h], device=coords.device, dtype=coords.dtype)
        seen = (gate > 0.5).unsqueeze(-1)
        none = ~seen.any(dim=1, keepdim=True)
        seen = seen | none  # no landmark predicted visible: span all of them
        low = coords.masked_fill(~seen, float("inf")).amin(dim=1)
        high = coords.masked_fill(~seen, float("-inf")).amax(dim=1)
        margin = self.box_fraction / 2
        boxes = torch.cat([(low - margin).clamp(0, 1) * scale, (high + margin).clamp(0, 1) * scale], dim=-1)
        index = torch.arange(b, device=coords.device, dtype=coords.dtype).unsqueeze(1)
        pooled = roi_align(feats, torch.cat([index, boxes], dim=1), output_size=self.pool_size,
                           spatial_scale=1.0, sampling_ratio=2, aligned=True)
        return pooled.reshape(b, 1, -1)


class GlobalBranch(nn.Module):
    """FC over the globally pooled stride-32 features (pooled once by the caller, who reuses them)."""

    def __init__(self, in_channels: int, out_dim: int) -> None:
        super().__init__()
        self.fc = nn.Sequential(nn.Linear(in_channels, out_dim), nn.ReLU(inplace=True))

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        return self.fc(pooled)
