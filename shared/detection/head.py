"""CenterNet (Zhou et al. 2019, "Objects as Points") on the backbone's stride-16 map.

Per cell of the map: one centre heatmap per garment class (``shared.vocabulary.GARMENT_CLASSES``), the box's
log width and log height (fractions of the image) and the centre's sub-cell offset. At 224 px the map is 14 x 14,
and outfit garments span 3-10 cells, so one centre per garment and class is enough; an outer layer has its own
class because its centre coincides with the garment under it.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from shared.vocabulary import GARMENT_CLASSES

NUM_CLASSES = len(GARMENT_CLASSES)
MAP_CHANNELS = NUM_CLASSES + 4  # heatmap logits, log w, log h, offset x, offset y (logits)
PRIOR = 0.1  # initial centre probability: focal-loss training starts from a quiet heatmap


class GarmentHead(nn.Module):
    def __init__(self, in_channels: int, width: int = 64) -> None:
        super().__init__()
        self.trunk = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(inplace=True),
            nn.Conv2d(width, width, 3, padding=2, dilation=2), nn.ReLU(inplace=True),
        )
        self.out = nn.Conv2d(width, MAP_CHANNELS, 1)
        nn.init.normal_(self.out.weight, std=0.01)
        nn.init.zeros_(self.out.bias)
        with torch.no_grad():
            self.out.bias[:NUM_CLASSES].fill_(-math.log((1 - PRIOR) / PRIOR))
            self.out.bias[NUM_CLASSES:NUM_CLASSES + 2].fill_(math.log(0.3))

    def forward(self, mid: torch.Tensor) -> torch.Tensor:
        """(B, C, h, w) stride-16 features -> (B, MAP_CHANNELS, h, w) raw maps."""
        return self.out(self.trunk(mid))
